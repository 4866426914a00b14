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

/// The data path of one connection: moves frames between the front-end's rings with bounded,
/// validated descriptor walks. Allocates nothing per frame.
extension BackendDataPath {
    /// One burst on every queue pair whose transmit ring is live; returns the frames handled.
    /// Throws when the front-end broke the ring protocol.
    /// `tap` is the interface of ``BackendMode/tap`` (nil in the other modes).
    package func forward(mode: BackendMode, tap: TapDevice? = nil, burst: Int, counters: BackendCounters) throws(VirtioError) -> Int {
        do {
            return try forwardBurst(mode: mode, tap: tap, burst: burst, counters: counters)
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

    private func forwardBurst(mode: BackendMode, tap: TapDevice?, burst: Int, counters: BackendCounters) throws(VirtioError) -> Int {
        var handled = 0
        var pair = 0
        while pair &* 2 < vrings.count {
            let pairCounters = counters.pairs[pair]
            let done = try forward(
                rxVring: vrings[pair &* 2], txVring: vrings[pair &* 2 &+ 1], mode: mode, tap: tap, burst: burst,
                counters: counters, pairCounters: pairCounters)
            if done > 0 {
                BackendCounters.add(pairCounters.framesReceived, done)
                handled &+= done
            }
            pair &+= 1
        }
        if mode == .tap, let tap {
            handled &+= try receiveFromTap(tap, burst: burst, counters: counters)
        }
        if indirectTablesRead != 0 {
            BackendCounters.add(counters.indirectTables, indirectTablesRead)
            indirectTablesRead = 0
        }
        // One load per burst: did any guarded mapping in the process fault since we looked?
        let faults = cvs_guard_total_faults()
        if faults != guardFaultsSeen {
            guardFaultsSeen = faults
            try memory.checkTruncation()
        }
        return handled
    }

    /// One burst on one queue pair: a frame the front-end transmits on pair n comes back on
    /// pair n's receive ring (loopback). Dispatches once per burst to the loop specialised for
    /// the rings' format.
    private func forward(
        rxVring: BackendVring, txVring: BackendVring, mode: BackendMode, tap: TapDevice?, burst: Int,
        counters: BackendCounters, pairCounters: BackendCounters.Pair
    ) throws(VirtioError) -> Int {
        guard txVring.enabled else { return 0 }
        if let tx = txVring.split {
            return try forward(tx: tx, rx: rxVring.split, rxVring: rxVring, txVring: txVring, mode: mode, tap: tap, burst: burst, counters: counters, pairCounters: pairCounters)
        }
        if let tx = txVring.packed {
            return try forward(tx: tx, rx: rxVring.packed, rxVring: rxVring, txVring: txVring, mode: mode, tap: tap, burst: burst, counters: counters, pairCounters: pairCounters)
        }
        return 0
    }

    private func forward<Ring: DeviceRing>(
        tx: Ring, rx: Ring?, rxVring: BackendVring, txVring: BackendVring, mode: BackendMode, tap: TapDevice?, burst: Int,
        counters: BackendCounters, pairCounters: BackendCounters.Pair
    ) throws(VirtioError) -> Int {
        guard let txSegments = txVring.segments, let txHosts = txVring.hosts else { return 0 }
        let handled: Int
        switch mode {
        case .sink:
            handled = try sink(tx: tx, txSegments: txSegments, txHosts: txHosts, burst: burst, counters: counters)
        case .tap:
            guard let tap else { return 0 }
            handled = try transmitToTap(tap, tx: tx, txSegments: txSegments, txHosts: txHosts, burst: burst, counters: counters)
        case .loopback:
            guard rxVring.enabled, let rx, let target = receiveTarget(rx, rxVring) else { return 0 }
            handled = try loopback(
                tx: tx, txSegments: txSegments, txHosts: txHosts, rx: target,
                burst: burst, counters: counters, pairCounters: pairCounters)
        }
        // Transmit completions before the looped-back copies: a front-end that re-sends what it
        // receives (testpmd io) must find its transmit buffers returned by the time the copies
        // arrive. DPDK's in-order transmit path frees descriptors only from completions already
        // visible, and with 32 jumbo frames outstanding it found none and dropped frames.
        if handled > 0, tx.publishUsed() { try txVring.notifyCall() }
        if handled > 0, mode == .loopback, let rx, rx.publishUsed() { try rxVring.notifyCall() }
        if let violation = tx.violation ?? rx?.violation {
            throw VirtioError(.protocolViolation, violation)
        }
        return handled
    }

    private func sink<Ring: DeviceRing>(
        tx: Ring, txSegments: UnsafeMutablePointer<ChainSegment>, txHosts: UnsafeMutablePointer<UnsafeMutableRawPointer>,
        burst: Int, counters: BackendCounters
    ) throws(VirtioError) -> Int {
        let count = min(tx.availableCount(), burst)
        let chainCapacity = Self.chainCapacity(tx)
        var bytes = 0
        var done = 0
        while done < count {
            guard let head = tx.peekAvailable(ahead: 0),
                  let n = readChain(tx, head: head, into: txSegments, capacity: chainCapacity) else { break }
            tx.skipAvailable(1)
            let length = try frameLength(txSegments, n)
            // Sink never reads a frame's bytes, so translates them only for the observer.
            if let frameObserver { frameObserver(Self.digest(try memory.translate(txSegments, n, into: txHosts)), length) }
            bytes &+= length
            tx.putUsed(head: head, length: 0)
            done &+= 1
        }
        BackendCounters.add(counters.framesReceived, done)
        BackendCounters.add(counters.bytesReceived, bytes)
        return done
    }

    /// Where looped-back frames go: the receive ring and its scratch space.
    struct ReceiveTarget<Ring: DeviceRing> {
        let ring: Ring
        let segments: UnsafeMutablePointer<ChainSegment>
        /// Our addresses of the gathered segments (translated as they are gathered).
        let hosts: UnsafeMutablePointer<UnsafeMutableRawPointer>
        let heads: UnsafeMutablePointer<UInt16>
        let capacities: UnsafeMutablePointer<Int>
        /// VIRTIO_NET_F_MRG_RXBUF: a frame may fill several receive chains.
        let mergeable: Bool
    }

    private func loopback<Ring: DeviceRing>(
        tx: Ring, txSegments: UnsafeMutablePointer<ChainSegment>, txHosts: UnsafeMutablePointer<UnsafeMutableRawPointer>,
        rx: ReceiveTarget<Ring>,
        burst: Int, counters: BackendCounters, pairCounters: BackendCounters.Pair
    ) throws(VirtioError) -> Int {
        // Only take a frame once there are receive buffers for it: the front-end sees
        // back-pressure (a full transmit ring) rather than loss.
        let count = min(tx.availableCount(), burst)
        let chainCapacity = Self.chainCapacity(tx)
        var rxAvailable = rx.ring.availableCount()
        var bytes = 0
        var sent = 0
        var dropped = 0
        var done = 0
        while done < count, rxAvailable > 0 {
            guard let head = tx.peekAvailable(ahead: 0),
                  let txCount = readChain(tx, head: head, into: txSegments, capacity: chainCapacity) else { break }
            let length = try frameLength(txSegments, txCount)
            let total = VirtioNetHeader.size + length
            guard let (chains, segmentCount, capacity) = try gatherReceiveChains(rx, available: rxAvailable, needed: total) else { break }
            if capacity < total && rx.mergeable {
                // Not enough receive buffers yet for this frame: leave it for the next burst.
                break
            }
            tx.skipAvailable(1)
            let source = try memory.translate(txSegments, txCount, into: txHosts)
            if let frameObserver { frameObserver(Self.digest(source), length) }
            // Offload requests are read only when the front-end may make them.
            let action = sendsOffloads ? try offloadAction(source, frameLength: length) : .deliver(VirtioNetOffload())
            if case .drop = action {
                dropped &+= 1
            } else if capacity >= total {
                var delivered = VirtioNetOffload()
                if case .deliver(let offload) = action { delivered = offload }
                let received = HostChain(segments: rx.segments, hosts: rx.hosts, count: segmentCount)
                copyFrame(from: source, to: rx, received, chains: chains, frameLength: length, offload: delivered)
                if case .computeChecksum(let start, let offset) = action {
                    Self.fillChecksum(received, start: start, offset: offset, frameLength: length)
                }
                rx.finish(chains: chains, frameLength: length)
                rxAvailable &-= chains
                sent &+= 1
            } else {
                // One receive buffer, too small for the frame (no mergeable buffers): drop the
                // frame, keep the buffer.
                dropped &+= 1
            }
            tx.putUsed(head: head, length: 0)
            bytes &+= length
            done &+= 1
        }
        BackendCounters.add(counters.framesReceived, done)
        BackendCounters.add(counters.bytesReceived, bytes)
        BackendCounters.add(counters.framesSent, sent)
        BackendCounters.add(pairCounters.framesSent, sent)
        BackendCounters.add(counters.drops, dropped)
        return done
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
                throw VirtioError(.protocolViolation, "A transmit chain contains a device-writable descriptor.")
            }
            total &+= UInt64(segments[i].length)
        }
        guard total >= UInt64(VirtioNetHeader.size) else {
            throw VirtioError(.protocolViolation, "A transmit chain of \(total) bytes is shorter than the 12-byte virtio-net header.")
        }
        guard total <= UInt64(VirtioNetHeader.size + VirtioNetHeader.maximumFrameLength) else {
            throw VirtioError(.protocolViolation, "A transmit chain of \(total) bytes is longer than the header and the longest frame (\(VirtioNetHeader.maximumFrameLength) bytes) together.")
        }
        return Int(total) - VirtioNetHeader.size
    }

    /// Reads and translates the next receive chains (not taking them) into the target's scratch
    /// space until they hold `needed` bytes — at most one chain without mergeable buffers, at most
    /// `available` with. Returns how many chains and their capacity; nil when a chain could not
    /// be read (the ring's violation says why).
    func gatherReceiveChains<Ring: DeviceRing>(_ rx: ReceiveTarget<Ring>, available: Int, needed: Int) throws(VirtioError) -> (chains: Int, segments: Int, capacity: Int)? {
        var chains = 0
        var segmentCount = 0
        var capacity = 0
        while capacity < needed, chains < available {
            guard let head = rx.ring.peekAvailable(ahead: chains),
                  let n = readChain(rx.ring, head: head, into: rx.segments + segmentCount, capacity: min(rx.ring.size &- segmentCount, Self.maximumSegmentsPerChain)) else { return nil }
            var chainCapacity = 0
            for i in segmentCount..<(segmentCount &+ n) {
                guard rx.segments[i].deviceWritable else {
                    throw VirtioError(.protocolViolation, "A receive chain contains a read-only descriptor.")
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
    /// gathered, whose capacity the caller checked. ``ReceiveTarget/finish(chains:frameLength:)``
    /// then takes them.
    func copyFrame<Ring: DeviceRing>(
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

    /// A receive ring's target, with its scratch space (nil before the ring started).
    func receiveTarget<Ring: DeviceRing>(_ ring: Ring, _ vring: BackendVring) -> ReceiveTarget<Ring>? {
        guard let segments = vring.segments, let hosts = vring.hosts, let heads = vring.mergeHeads,
              let capacities = vring.mergeCapacities else { return nil }
        return ReceiveTarget(ring: ring, segments: segments, hosts: hosts, heads: heads, capacities: capacities, mergeable: mergeable)
    }
}

extension BackendDataPath.ReceiveTarget {
    /// Marks the first `chains` gathered chains used with the bytes each got (header and a
    /// frame of `frameLength`), and takes them.
    @inline(__always)
    func finish(chains: Int, frameLength: Int) {
        var remaining = VirtioNetHeader.size + frameLength
        for c in 0..<chains {
            let written = min(remaining, capacities[c])
            ring.putUsed(head: heads[c], length: UInt32(written))
            remaining &-= written
        }
        ring.skipAvailable(chains)
    }
}
