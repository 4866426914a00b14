import CVirtioShim
import VirtioCore

/// The driver side of a transmit virtqueue: frames go out in bursts, completions are reclaimed
/// lazily (only when descriptors or pool buffers run short), and the device is kicked only
/// when it asked.
/// A frame of several buffers goes out as one descriptor chain (or indirect table).
/// As for ``ReceiveQueue``, a split and a packed ring share the memory; the session's format
/// is chosen once per burst.
@usableFromInline
final class TransmitQueue {
    /// The violation a failed kick stands for (``EventNotifier/signal()`` fails with one).
    @usableFromInline @inline(never)
    static func kickViolation(_ error: VirtioError) -> RingViolation {
        if case .ringViolation(let violation) = error { return violation }
        return .kickFailed(errno: error.errno ?? .ioError)
    }

    @usableFromInline let split: SplitRingDriver
    @usableFromInline let packed: PackedRingDriver
    /// VIRTIO_F_RING_PACKED is in force (set by the control path while the pair is stopped).
    @exclusivity(unchecked) @usableFromInline var usesPacked = false
    @usableFromInline let pool: PacketPool
    @usableFromInline let kick: EventNotifier
    @usableFromInline let counters = QueueCounters()
    /// The offload features in force (CSUM, HOST_TSO4/6), set by the control path.
    @exclusivity(unchecked) @usableFromInline var offloads: VirtioFeatures = []

    init(split: SplitRingDriver, packed: PackedRingDriver, pool: PacketPool, kick: EventNotifier) {
        self.split = split
        self.packed = packed
        self.pool = pool
        self.kick = kick
    }

    /// The ring in use, for the control path (not per frame).
    var ring: any DriverRing { usesPacked ? packed : split }

    /// A violation on either ring; safe from any thread.
    var violation: RingViolation? { split.violation ?? packed.violation }

    /// Fresh state for a new session in the format negotiated (the caller reclaimed every
    /// buffer first).
    func reset(packed usesPacked: Bool) {
        self.usesPacked = usesPacked
        if usesPacked { packed.reset() } else { split.reset() }
    }

    /// Returns completed buffers (every buffer of a chained frame) to the pool.
    @inlinable
    func reclaim() {
        if usesPacked { reclaim(packed) } else { reclaim(split) }
    }

    @inlinable
    func reclaim<Ring: DriverRing>(_ ring: Ring) {
        let pool = self.pool
        let buffers = ring.takeCompletions { pool.put(slot: $0) }
        QueueCounters.add(counters.completed, buffers)
    }

    /// Sends the first frames of `burst`; returns how many buffers went. Sent buffers leave
    /// the burst; the rest stay at its front, still owned by the caller (a chained frame goes
    /// whole or not at all).
    @inlinable
    func transmit(_ burst: PacketBurst, capture: PacketCapture? = nil) -> Int {
        usesPacked ? transmit(burst, ring: packed, capture: capture) : transmit(burst, ring: split, capture: capture)
    }

    @inlinable
    func transmit<Ring: DriverRing>(_ burst: PacketBurst, ring: Ring, capture: PacketCapture?) -> Int {
        let wanted = burst.count
        // Reclaim when descriptors run short, or buffers: with indirect tables a frame of five
        // buffers takes one descriptor, so the pool (which receive refills from) can run dry
        // long before the ring does.
        if ring.freeDescriptors < wanted || pool.available < pool.count >> 2 { reclaim(ring) }
        var sent = 0
        var bytes = 0
        var dropped = 0
        var i = 0
        while i < wanted {
            let packet = burst.storage[i]
            if packet.segments > 1 {
                let count = Int(packet.segments)
                guard i &+ count <= wanted, ring.freeDescriptors >= count else { break }
                let length = addChain(burst, from: i, count: count, ring: ring)
                if length >= 0 {
                    sent &+= 1
                    bytes &+= length
                } else {
                    dropped &+= 1
                }
                i &+= count
                continue
            }
            guard ring.freeDescriptors > 0 else { break }
            i &+= 1
            guard packet.segments == 1, packet.length >= 0, packet.length <= PacketPool.dataRoom, pool.owns(slot: packet.slot),
                  !packet.hasOffload || offloadAllowed(packet) else {
                // A frame that cannot fit its own buffer, a continuation without its first
                // segment, or a buffer of another queue pair's pool is the caller's bug: drop
                // it and count it (`put` refuses a foreign slot and counts it as an invalid
                // release rather than adopt it).
                pool.put(slot: packet.slot)
                dropped &+= 1
                continue
            }
            let header = packet.data - VirtioNetHeader.size
            prepareHeader(header, keepingOffload: packet.hasOffload)
            ring.add(
                address: UInt64(UInt(bitPattern: header)),
                length: UInt32(truncatingIfNeeded: packet.length &+ VirtioNetHeader.size),
                deviceWritable: false, cookie: packet.slot)
            sent &+= 1
            bytes &+= packet.length
        }
        if wanted > i { QueueCounters.add(counters.ringFull, wanted &- i) }
        if i > 0 {
            if ring.publish() {
                // A back-end that made the kick block is hostile: the ring stops and the link
                // monitor ends the session.
                do throws(VirtioError) { try kick.signal() } catch { ring.reportViolation(Self.kickViolation(error)) }
                QueueCounters.add(counters.kicks, 1)
            }
            if let capture, capture.directions.contains(.transmit) { capture.record(burst, from: 0, count: i) }
            burst.removeFirst(i)
            QueueCounters.add(counters.packets, sent)
            QueueCounters.add(counters.bytes, bytes)
            if dropped > 0 { QueueCounters.add(counters.drops, dropped) }
        }
        return i
    }

    /// A zero header (no offloads; num_buffers is unused on transmit), or the caller's offload
    /// fields with num_buffers cleared. Written only where it is not already so: a buffer's
    /// header is zero lap after lap, and a line left unwritten stays shared with the back-end
    /// that read it, where a store would first have to take it back (as DPDK's
    /// `virtqueue_clear_net_hdr` does with `ASSIGN_UNLESS_EQUAL`).
    @inlinable @inline(__always)
    func prepareHeader(_ header: UnsafeMutableRawPointer, keepingOffload: Bool) {
        if keepingOffload {
            if header.loadUnaligned(fromByteOffset: 10, as: UInt16.self) != 0 { (header + 10).storeBytes(of: 0, as: UInt16.self) }
        } else {
            if header.loadUnaligned(as: UInt64.self) != 0 { header.storeBytes(of: 0, as: UInt64.self) }
            if header.loadUnaligned(fromByteOffset: 8, as: UInt32.self) != 0 { (header + 8).storeBytes(of: 0, as: UInt32.self) }
        }
    }

    /// Whether the offload `packet` asks for was negotiated.
    @inlinable
    func offloadAllowed(_ packet: PacketBuffer) -> Bool {
        guard let needed = packet.offload.featuresNeededToSend else { return false }
        return offloads.isSuperset(of: needed)
    }

    /// Puts the `count`-buffer frame at `burst[first]` on the ring as one chain: the header
    /// and first segment, then each continuation. Returns the frame's length, or -1 after
    /// dropping it (every buffer back to its pool) when a segment is malformed.
    @inlinable
    func addChain<Ring: DriverRing>(_ burst: PacketBurst, from first: Int, count: Int, ring: Ring) -> Int {
        var total = 0
        var valid = true
        var k = 0
        while k < count {
            let segment = burst.storage[first &+ k]
            let maximum = k == 0 ? PacketPool.dataRoom : pool.room(after: segment.data, slot: segment.slot)
            if !pool.owns(slot: segment.slot) || segment.length < 0 || segment.length > maximum || (k > 0 && segment.segments != 0) {
                valid = false
            }
            if k == 0 && segment.hasOffload && !offloadAllowed(segment) { valid = false }
            total &+= segment.length
            k &+= 1
        }
        guard valid, total <= VirtioUserDevice.maximumChainedFrameLength else {
            for k in 0..<count { pool.put(slot: burst.storage[first &+ k].slot) }
            return -1
        }
        let header = burst.storage[first].data - VirtioNetHeader.size
        prepareHeader(header, keepingOffload: burst.storage[first].hasOffload)
        let storage = burst.storage
        ring.addChain(count: count, deviceWritable: false) { k in
            let segment = storage[first &+ k]
            if k == 0 {
                return (UInt64(UInt(bitPattern: header)), UInt32(truncatingIfNeeded: segment.length &+ VirtioNetHeader.size), segment.slot)
            }
            return (UInt64(UInt(bitPattern: segment.data)), UInt32(truncatingIfNeeded: segment.length), segment.slot)
        }
        return total
    }
}
