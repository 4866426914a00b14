#if canImport(Glibc)
import Glibc
#endif
import VirtioCore

/// One session's scratch space for TAP I/O, allocated when the session first uses the TAP:
/// the scatter list of one frame and the header sent ahead of it. Nothing is allocated per frame.
final class TapScratch {
    /// The most segments one readv/writev takes (IOV_MAX on Linux).
    static let maximumSegments = 1024
    let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: maximumSegments)
    /// The checked virtio-net header written ahead of a transmitted frame's bytes.
    let header = UnsafeMutableRawPointer.allocate(byteCount: VirtioNetHeader.size, alignment: 8)
    /// One byte read past a frame's receive buffers: a read that reaches it was a frame too
    /// long for them (the kernel truncates silently, reporting only what it copied).
    let overflow = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)

    deinit {
        iovecs.deallocate()
        header.deallocate()
        overflow.deallocate()
    }
}

/// ``BackendMode/tap``: one writev per frame a front-end transmits (its bytes straight from the
/// shared memory), one readv per frame the kernel sends (straight into the front-end's receive
/// buffers). No copy in this process either way. Frames from the kernel go to queue pair 0.
struct TapBridge: FrameForwarding {
    let tap: TapDevice
    let burst: Int
    let counters: BackendCounters

    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) -> Int {
        guard let tx = pair.tx else { return 0 }
        let done = try path.transmitToTap(tap, from: tx, burst: burst, counters: counters, pair: pair.index)
        path.countIndirectTables(into: counters)
        try tx.publish(took: done)
        return done
    }

    /// Frames from the kernel, into pair 0's receive ring.
    func afterPairs(on path: BackendDataPath) throws(VirtioError) -> Int {
        guard !tap.gone.load(ordering: .relaxed), !path.vrings.isEmpty else { return 0 }
        return try path.withPair(0, TapReceive(tap: tap, burst: burst, counters: counters))
    }
}

/// Reads frames from the TAP into a pair's receive ring.
private struct TapReceive: PairWork {
    let tap: TapDevice
    let burst: Int
    let counters: BackendCounters

    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) -> Int {
        guard let rx = pair.rx else { return 0 }
        return try path.receiveFromTap(tap, into: rx, burst: burst, counters: counters)
    }
}

extension BackendDataPath {
    /// Moves up to `burst` frames from a transmit ring to the TAP. A frame the kernel refuses
    /// (malformed, the interface down) is dropped and counted; a full kernel queue leaves the
    /// rest on the ring for the next burst.
    fileprivate func transmitToTap<Ring: BackendRing>(
        _ tap: TapDevice, from tx: TransmitSource<Ring>, burst: Int, counters: BackendCounters, pair: Int
    ) throws(VirtioError) -> Int {
        let txSegments = tx.segments, txHosts = tx.hosts
        let scratch = tapScratch
        let iovecs = scratch.iovecs
        let count = min(tx.ring.availableCount(), burst)
        let chainCapacity = Self.chainCapacity(tx.ring)
        var bytes = 0
        var dropped = 0
        var done = 0
        frames: while done < count {
            guard let head = tx.ring.peekAvailable(ahead: 0),
                  let n = readChain(tx.ring, head: head, into: txSegments, capacity: chainCapacity) else { break }
            let length = try frameLength(txSegments, n)
            let chain = try memory.translate(txSegments, n, into: txHosts)
            // The kernel gets our checked copy of the header, never the front-end's (which it
            // could change between our check and the kernel's read), and none of it unless the
            // front-end negotiated offloads.
            let offload = sendsOffloads ? try requestedOffload(chain, frameLength: length) : VirtioNetOffload()
            scratch.header.initializeMemory(as: UInt8.self, repeating: 0, count: VirtioNetHeader.size)
            offload.write(to: scratch.header)
            iovecs[0] = iovec(iov_base: scratch.header, iov_len: VirtioNetHeader.size)
            var iovecCount = 1
            var fits = true
            var reader = ChainReader(chain, from: VirtioNetHeader.size)
            while let (pointer, count) = reader.next() {
                guard iovecCount < TapScratch.maximumSegments else {
                    fits = false
                    break
                }
                iovecs[iovecCount] = iovec(iov_base: pointer, iov_len: count)
                iovecCount &+= 1
            }
            if fits {
                let segmentsToWrite = Int32(iovecCount)
                let (written, error) = SystemCall.attempt { writev(tap.descriptor.raw, iovecs, segmentsToWrite) }
                if written < 0 {
                    switch error {
                    case EAGAIN, ENOBUFS:
                        break frames  // the kernel's queue is full: this frame and the rest wait on the ring
                    case EFAULT:
                        throw .memory(.unreadable(what: "a transmitted frame"))
                    case EBADFD:
                        tap.gone.store(true, ordering: .relaxed)
                        dropped &+= 1
                    default:
                        dropped &+= 1  // EINVAL: shorter than an Ethernet header; EIO: the TAP is down
                    }
                }
            } else {
                dropped &+= 1  // more segments than one writev takes
            }
            if let frameObserver { frameObserver(Self.digest(chain), length) }
            tx.ring.skipAvailable(1)
            tx.ring.putUsed(head: head, length: 0)
            bytes &+= length
            done &+= 1
        }
        counters.addBurst(pair: pair, taken: done, bytes: bytes, dropped: dropped)
        return done
    }

    /// Reads up to `burst` frames from the TAP into a receive ring, each only when the ring has
    /// buffers for it. Returns the frames read.
    fileprivate func receiveFromTap<Ring: BackendRing>(
        _ tap: TapDevice, into target: ReceiveTarget<Ring>, burst: Int, counters: BackendCounters
    ) throws(VirtioError) -> Int {
        let rx = target.ring
        let capacities = target.capacities
        let iovecs = tapScratch.iovecs
        // The kernel sends frames of up to the TAP's MTU plus an Ethernet header and a VLAN
        // tag; the front-end's MTU is what the TAP should be set to. Larger frames are
        // truncated by the kernel and dropped here.
        let needed = VirtioNetHeader.size + mtu + 18
        var available = rx.availableCount()
        var sent = 0
        var dropped = 0
        var reads = 0
        frames: while reads < burst, available > 0 {
            guard let (chains, segmentCount, _) = try gatherReceiveChains(target, available: available, needed: needed) else { break }
            var iovecCount = 0
            var room = 0
            while iovecCount < min(segmentCount, TapScratch.maximumSegments &- 1) {
                let length = Int(target.segments[iovecCount].length)
                iovecs[iovecCount] = iovec(iov_base: target.hosts[iovecCount], iov_len: length)
                room &+= length
                iovecCount &+= 1
            }
            iovecs[iovecCount] = iovec(iov_base: tapScratch.overflow, iov_len: 1)
            let segmentsToRead = Int32(iovecCount &+ 1)
            let (count, error) = SystemCall.attempt { readv(tap.descriptor.raw, iovecs, segmentsToRead) }
            if count < 0 {
                switch error {
                case EFAULT:
                    throw .memory(.unreadable(what: "a received frame"))
                case EINVAL:
                    // Buffers shorter than the header: the kernel dropped the frame.
                    dropped &+= 1
                    reads &+= 1
                    continue frames
                case EBADFD:
                    tap.gone.store(true, ordering: .relaxed)  // the interface was deleted
                    break frames
                default:
                    break frames  // EAGAIN: nothing waiting
                }
            }
            reads &+= 1
            let total = Int(count)
            guard total > VirtioNetHeader.size, total <= room else {
                // Longer than the buffers (it reached the overflow byte) or empty: the buffers
                // stay on the ring, the frame is lost.
                dropped &+= 1
                continue
            }
            var used = 0
            var remaining = total
            while remaining > 0, used < chains {
                remaining &-= min(remaining, capacities[used])
                used &+= 1
            }
            let received = HostChain(segments: target.segments, hosts: target.hosts, count: segmentCount)
            guard finishTapHeader(received, frameLength: total &- VirtioNetHeader.size, buffers: used) else {
                dropped &+= 1
                continue
            }
            target.finish(chains: used, total: total)
            available &-= used
            sent &+= 1
        }
        try target.publish(delivered: sent)
        counters.addBurst(pair: 0, taken: 0, bytes: 0, sent: sent, dropped: dropped)
        return reads
    }

    /// Makes the header the kernel wrote fit what the front-end negotiated: num_buffers set,
    /// and without GUEST_CSUM no flags (a checksum the kernel left open, from before the
    /// session, is filled in here). False when the frame cannot be delivered (a segmented
    /// frame, which the TAP is never asked for, or a checksum position outside the frame).
    private func finishTapHeader(_ chain: HostChain, frameLength: Int, buffers: Int) -> Bool {
        var offload = Self.header(of: chain)
        if offload.gsoType != VirtioNetOffload.gsoNone { return false }
        if !features.contains(.netGuestCsum) {
            if offload.flags & VirtioNetOffload.needsChecksum != 0 {
                let start = Int(offload.checksumStart), offset = Int(offload.checksumOffset)
                guard start + offset + 2 <= frameLength else { return false }
                Self.fillChecksum(chain, start: start, offset: offset, frameLength: frameLength)
            }
            offload = VirtioNetOffload()
        }
        var bytes = (UInt64(0), UInt16(0), UInt16(truncatingIfNeeded: buffers).littleEndian)
        offload.write(to: &bytes)
        var writer = ChainWriter(chain)
        withUnsafeBytes(of: &bytes) { writer.write($0.baseAddress!, VirtioNetHeader.size) }
        return true
    }
}
