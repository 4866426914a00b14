import CVirtioShim
import VirtioCore

/// What a back-end does with the frames a front-end transmits.
public enum BackendMode: String, Sendable, CaseIterable {
    /// Each frame comes back on the front-end's receive queue, byte for byte.
    case loopback
    /// Frames are counted and dropped.
    case sink
    /// Frames go to a Linux TAP interface (``VhostUserBackend/Configuration/tapInterface``),
    /// that is to the kernel's network stack, and frames the kernel sends out of the TAP arrive
    /// on the front-end's first receive queue.
    case tap
}

/// What a session does with its front-end's frames — loop them back, sink them, bridge them to
/// a TAP, or switch them to other ports — one burst per queue pair. One is chosen per session
/// (by the back-end's mode, or by being a switch port) and the serving loop is specialised for
/// it; each is written once, generic over the ring format.
protocol FrameForwarding: PairWork where Result == Int {
    /// After every pair's burst: frames that arrive from elsewhere (the TAP's). None by default.
    func afterPairs(on path: BackendDataPath) throws(VirtioError) -> Int
    /// Work waiting that no kick will announce (the idle sleep's last look): by default, a frame
    /// on some transmit ring.
    func hasWork(on path: BackendDataPath) -> Bool
}

extension FrameForwarding {
    func afterPairs(on path: BackendDataPath) throws(VirtioError) -> Int { 0 }

    func hasWork(on path: BackendDataPath) -> Bool {
        var ring = 1
        while ring < path.vrings.count {
            if let tx = path.vrings[ring].ring, tx.availableCount() > 0 { return true }
            ring &+= 2
        }
        return false
    }
}

/// The chain steps every data path shares: a bounded, validated read of a chain, its frame
/// length, gathering receive chains, copying a frame. Allocates nothing per frame.
extension BackendDataPath {
    /// One burst of `forwarding` on every queue pair; returns the frames handled. Throws when
    /// the front-end broke the ring protocol.
    func forward<Forwarding: FrameForwarding>(_ forwarding: Forwarding) throws(VirtioError) -> Int {
        do {
            return try forwardBurst(forwarding)
        } catch {
            // Memory the front-end shrank reads as zeros once the guard has absorbed the fault,
            // so a ring may look broken first: name the real cause.
            if cvs_guard_total_faults() != guardFaultsSeen {
                guardFaultsSeen = cvs_guard_total_faults()
                try memory.checkTruncation()
            }
            throw error
        }
    }

    /// One burst of ``BackendMode/loopback`` (the fuzz harness's way in).
    package func forwardLoopback(burst: Int, counters: BackendCounters) throws(VirtioError) -> Int {
        try forward(Loopback(burst: burst, counters: counters))
    }

    private func forwardBurst<Forwarding: FrameForwarding>(_ forwarding: Forwarding) throws(VirtioError) -> Int {
        var handled = 0
        var pair = 0
        while pair &* 2 < vrings.count {
            handled &+= try withPair(pair, forwarding)
            pair &+= 1
        }
        handled &+= try forwarding.afterPairs(on: self)
        // One load per burst: did any guarded mapping in the process fault since we looked?
        let faults = cvs_guard_total_faults()
        if faults != guardFaultsSeen {
            guardFaultsSeen = faults
            try memory.checkTruncation()
        }
        return handled
    }

    /// Adds the indirect tables read since the last call to `counters` (once per burst).
    @inline(__always)
    func countIndirectTables(into counters: BackendCounters) {
        if indirectTablesRead != 0 {
            BackendCounters.add(counters.indirectTables, indirectTablesRead)
            indirectTablesRead = 0
        }
    }

    /// Most descriptors one chain may have, however long the queue: what DPDK's vhost accepts
    /// (BUF_VECTOR_MAX), far above what any front-end sends (Linux: 19). It bounds the work one
    /// frame can cost.
    static let maximumSegmentsPerChain = 256

    /// How many descriptors a chain of `ring` may have: the queue's size, at most
    /// ``maximumSegmentsPerChain`` (worked out once per burst, passed to ``readChain``).
    @inline(__always)
    static func chainCapacity<Ring: DeviceRing>(_ ring: Ring) -> Int {
        min(ring.size, maximumSegmentsPerChain)
    }

    /// Reads a chain of at most `capacity` descriptors (``chainCapacity(_:)`` or less),
    /// following an indirect table when VIRTIO_RING_F_INDIRECT_DESC was negotiated (the table
    /// must lie inside the shared memory).
    @inline(__always)
    func readChain<Ring: DeviceRing>(_ ring: Ring, head: UInt16, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int) -> Int? {
        guard acceptsIndirect else { return ring.readChain(head: head, into: segments, capacity: capacity) }
        let memory = self.memory
        return ring.readChain(head: head, into: segments, capacity: capacity) { address, length in
            self.indirectTablesRead &+= 1
            return memory.translate(guestPhysical: address, length: UInt64(length))
        }
    }

    /// Frame bytes in a transmit chain: all readable bytes minus the virtio-net header.
    func frameLength(_ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int) throws(VirtioError) -> Int {
        var total: UInt64 = 0
        for i in 0..<count {
            guard !segments[i].deviceWritable else {
                throw .peerProtocol(.badFrame(problem: "a transmit chain contains a device-writable descriptor"))
            }
            total &+= UInt64(segments[i].length)
        }
        guard total >= UInt64(VirtioNetHeader.size) else {
            throw .peerProtocol(.badFrame(problem: "a transmit chain of \(total) bytes is shorter than the 12-byte virtio-net header"))
        }
        guard total <= UInt64(VirtioNetHeader.size + VirtioNetHeader.maximumFrameLength) else {
            throw .peerProtocol(.badFrame(problem: "a transmit chain of \(total) bytes is longer than the header and the longest frame (\(VirtioNetHeader.maximumFrameLength) bytes) together"))
        }
        return Int(total) - VirtioNetHeader.size
    }

    /// Reads and translates the next receive chains (not taking them) into the target's scratch
    /// space until they hold `needed` bytes — at most one chain without mergeable buffers, at most
    /// `available` with. Returns how many chains and their capacity; nil when a chain could not
    /// be read (the ring's violation says why).
    func gatherReceiveChains<Ring: BackendRing>(_ rx: ReceiveTarget<Ring>, available: Int, needed: Int) throws(VirtioError) -> (chains: Int, segments: Int, capacity: Int)? {
        var chains = 0
        var segmentCount = 0
        var capacity = 0
        while capacity < needed, chains < available {
            guard let head = rx.ring.peekAvailable(ahead: chains),
                  let n = readChain(rx.ring, head: head, into: rx.segments + segmentCount, capacity: min(rx.ring.size &- segmentCount, Self.maximumSegmentsPerChain)) else { return nil }
            var chainCapacity = 0
            for i in segmentCount..<(segmentCount &+ n) {
                guard rx.segments[i].deviceWritable else {
                    throw .peerProtocol(.badFrame(problem: "a receive chain contains a read-only descriptor"))
                }
                chainCapacity &+= Int(rx.segments[i].length)
            }
            _ = try memory.translate(rx.segments + segmentCount, n, into: rx.hosts + segmentCount)
            rx.heads[chains] = head
            rx.capacities[chains] = chainCapacity
            capacity &+= chainCapacity
            segmentCount &+= n
            chains &+= 1
            if !rx.mergeable { break }
        }
        return (chains, segmentCount, capacity)
    }

    /// Copies header + frame from a transmit chain (translated in its own front-end's memory:
    /// ours for loopback, another front-end's in a switch) into the first receive chains
    /// gathered, whose capacity the caller checked. ``ReceiveTarget/finish(chains:total:)``
    /// then takes them.
    func copyFrame<Ring: BackendRing>(
        from source: HostChain, to rx: ReceiveTarget<Ring>, _ received: HostChain, chains: Int, frameLength: Int,
        offload: VirtioNetOffload
    ) {
        var writer = ChainWriter(received)
        // Receive header: the offload fields, num_buffers = the chains used (§5.1.6.4).
        var header = (UInt64(0), UInt16(0), UInt16(truncatingIfNeeded: chains))
        if !offload.isEmpty { withUnsafeMutableBytes(of: &header) { offload.write(to: $0.baseAddress!) } }
        withUnsafeBytes(of: &header) { writer.write($0.baseAddress!, VirtioNetHeader.size) }
        var reader = ChainReader(source, from: VirtioNetHeader.size)
        while let (pointer, count) = reader.next() { writer.write(pointer, count) }
    }

    /// FNV-1a over the frame bytes of a transmit chain (the virtio-net header skipped).
    static func digest(_ chain: HostChain) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        var reader = ChainReader(chain, from: VirtioNetHeader.size)
        while let (pointer, count) = reader.next() {
            for offset in 0..<count {
                hash = (hash ^ UInt64(pointer.load(fromByteOffset: offset, as: UInt8.self))) &* 0x100_0000_01B3
            }
        }
        return hash
    }
}
