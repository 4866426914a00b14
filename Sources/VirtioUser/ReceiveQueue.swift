import Synchronization
import CVirtioShim
import VirtioCore

/// The driver side of a receive virtqueue: every free descriptor carries an empty buffer; used
/// ones are handed to the caller without copying and refilled in batches.
///
/// With mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF) the back-end may spread one frame
/// over several buffers, saying how many in the first one's header (`num_buffers`); the frame
/// then reaches the caller as a first segment and its continuations.
///
/// The queue has a split and a packed ring over the same memory and uses the one the session
/// negotiated: each burst dispatches once to a loop specialised for that format.
@usableFromInline
final class ReceiveQueue {
    @usableFromInline let split: SplitRingDriver
    @usableFromInline let packed: PackedRingDriver
    /// VIRTIO_F_RING_PACKED is in force (set by the control path while the pair is stopped).
    @exclusivity(unchecked) @usableFromInline var usesPacked = false
    @usableFromInline let pool: PacketPool
    @usableFromInline let kick: EventNotifier
    @usableFromInline let counters = QueueCounters()
    /// Refill once at least this many descriptors are free (batching the avail publication).
    @usableFromInline let refillThreshold: Int
    /// VIRTIO_NET_F_MRG_RXBUF is in force (set by the control path while the pair is stopped).
    @exclusivity(unchecked) @usableFromInline var mergeable = false
    /// The first used length of the session that a buffer cannot hold, for the control path to
    /// log (once): `1 << 32 | length`; 0 while there is none; ``reported`` once logged.
    @usableFromInline let badLength = Atomic<UInt64>(0)
    static let reported = UInt64.max

    init(split: SplitRingDriver, packed: PackedRingDriver, pool: PacketPool, kick: EventNotifier, refillThreshold: Int) {
        self.split = split
        self.packed = packed
        self.pool = pool
        self.kick = kick
        self.refillThreshold = max(1, min(refillThreshold, split.size))
    }

    /// The ring in use, for the control path (not per frame).
    var ring: any DriverRing { usesPacked ? packed : split }

    /// A violation on either ring; safe from any thread.
    var violation: RingViolation? { split.violation ?? packed.violation }

    /// Fresh state for a new session in the format negotiated (the caller reclaimed every
    /// buffer first).
    func reset(packed usesPacked: Bool) {
        self.usesPacked = usesPacked
        badLength.store(0, ordering: .relaxed)
        if usesPacked { packed.reset() } else { split.reset() }
    }

    /// Posts empty buffers on every free descriptor the pool can cover.
    @inlinable
    func refill() {
        if usesPacked { refill(packed) } else { refill(split) }
    }

    @inlinable
    func refill<Ring: DriverRing>(_ ring: Ring) {
        var posted = 0
        let wanted = ring.freeDescriptors
        while posted < wanted, let buffer = pool.take() {
            ring.add(
                address: UInt64(UInt(bitPattern: buffer.data - VirtioNetHeader.size)),
                length: UInt32(VirtioNetHeader.size + PacketPool.dataRoom),
                deviceWritable: true, cookie: buffer.slot)
            posted &+= 1
        }
        if posted < wanted { QueueCounters.add(counters.noBuffers, wanted &- posted) }
        if posted > 0, ring.publish() {
            // A back-end that made the kick block is hostile: the ring stops and the link
            // monitor ends the session.
            do throws(VirtioError) { try kick.signal() } catch { ring.reportViolation(TransmitQueue.kickViolation(error)) }
            QueueCounters.add(counters.kicks, 1)
        }
    }

    /// Bytes the back-end may write into one receive buffer (header included).
    @usableFromInline static let bufferLength = VirtioNetHeader.size + PacketPool.dataRoom

    /// Moves received frames into `burst` (up to its free space); returns how many buffers
    /// were appended (frames, unless some span several buffers).
    @inlinable
    func receive(into burst: PacketBurst) -> Int {
        usesPacked ? receive(into: burst, ring: packed) : receive(into: burst, ring: split)
    }

    @inlinable
    func receive<Ring: DriverRing>(into burst: PacketBurst, ring: Ring) -> Int {
        let available = ring.usedCount()
        var taken = 0
        var appended = 0
        var frames = 0
        var bytes = 0
        var dropped = 0
        var lengthErrors = 0
        while taken < available, burst.held < burst.capacity {
            guard let (slot, written) = ring.peekUsed(ahead: 0) else { break }
            // With mergeable buffers, every buffer of a frame but the last is used to its full
            // length (VIRTIO 1.1 §5.1.6.4.2): only a full first buffer can start a frame of
            // several, so only then is num_buffers read (another cache line).
            if mergeable, written == UInt32(Self.bufferLength) {
                let count = Int((pool.dataPointer(slot: slot) - 2).load(as: UInt16.self).littleEndian)
                if count != 1 {
                    guard let (used, kept) = receiveSpanning(
                        count: count, available: available &- taken, into: burst, ring: ring,
                        frames: &frames, bytes: &bytes, dropped: &dropped, lengthErrors: &lengthErrors) else { break }
                    taken &+= used
                    appended &+= kept
                    continue
                }
            }
            ring.skipPeekedUsed()
            taken &+= 1
            let length = Int(written) &- VirtioNetHeader.size
            guard length >= 0, length <= PacketPool.dataRoom else {
                // The device claims to have written more than the buffer holds (or less than a
                // header): do not trust the frame. A receive error, as Linux counts it
                // (rx_length_errors), not a drop.
                pool.put(slot: slot)
                noteBadLength(written)
                lengthErrors &+= 1
                continue
            }
            burst.append(PacketBuffer(slot: slot, data: pool.dataPointer(slot: slot), length: length))
            appended &+= 1
            frames &+= 1
            bytes &+= length
        }
        finish(frames: frames, bytes: bytes, dropped: dropped, lengthErrors: lengthErrors, ring: ring)
        return appended
    }

    /// A frame over `count` buffers (num_buffers of the next used entry, not 1): taken once all
    /// are used and the burst has room for them. Returns the used entries taken and the
    /// buffers appended (none when the frame was dropped), or nil to stop for now (not all
    /// there yet, or a violation).
    @inlinable
    func receiveSpanning<Ring: DriverRing>(
        count: Int, available: Int, into burst: PacketBurst, ring: Ring,
        frames: inout Int, bytes: inout Int, dropped: inout Int, lengthErrors: inout Int
    ) -> (taken: Int, appended: Int)? {
        guard count >= 1, count <= ring.inFlight else {
            ring.reportViolation(.numBuffers(value: Int(count), posted: ring.inFlight))
            return nil
        }
        guard count <= available else { return nil }  // not all used yet
        if count > burst.capacity {
            // No burst of this caller's can ever hold it: drop it whole and count it. Left on
            // the ring, it would stop this queue for good.
            for _ in 0..<count {
                guard let (slot, _) = ring.takeUsed({ _ in }) else { return nil }
                pool.put(slot: slot)
            }
            dropped &+= 1
            return (count, 0)
        }
        guard count <= burst.capacity &- burst.held else { return nil }  // the next burst has room
        let start = burst.count
        var frameBytes = 0
        var valid = true
        var k = 0
        while k < count {
            guard let (slot, written) = ring.takeUsed({ _ in }) else { valid = false; break }
            // The first buffer holds the header, then frame bytes; the others frame bytes
            // from their very start (where the header would be).
            let data = pool.dataPointer(slot: slot) - (k == 0 ? 0 : VirtioNetHeader.size)
            let length = Int(written) &- (k == 0 ? VirtioNetHeader.size : 0)
            burst.append(PacketBuffer(slot: slot, data: data, length: length, segments: k == 0 ? UInt16(truncatingIfNeeded: count) : 0))
            if length < 0 || length > pool.room(after: data, slot: slot) {
                valid = false
                noteBadLength(written)
            }
            frameBytes &+= length
            k &+= 1
        }
        if !valid {
            // A length the buffer cannot hold (or a violation): the whole frame goes, the
            // buffers stay, and it counts as a receive error.
            while burst.count > start {
                burst.held &-= 1
                pool.put(slot: burst.storage[burst.count].slot)
            }
            if ring.violation == nil { lengthErrors &+= 1 }
            return ring.violation == nil ? (k, 0) : nil
        }
        frames &+= 1
        bytes &+= frameBytes
        return (count, count)
    }

    @inlinable
    func finish<Ring: DriverRing>(frames: Int, bytes: Int, dropped: Int, lengthErrors: Int, ring: Ring) {
        if ring.freeDescriptors >= refillThreshold { refill(ring) }
        if frames > 0 {
            QueueCounters.add(counters.packets, frames)
            QueueCounters.add(counters.bytes, bytes)
        }
        if dropped > 0 { QueueCounters.add(counters.drops, dropped) }
        if lengthErrors > 0 { QueueCounters.add(counters.errors, lengthErrors) }
    }

    /// Keeps the session's first bad used length for the control path's log line.
    @usableFromInline @inline(never)
    func noteBadLength(_ written: UInt32) {
        if badLength.load(ordering: .relaxed) == 0 { badLength.store(1 << 32 | UInt64(written), ordering: .relaxed) }
    }

    /// The session's first bad used length, once: later calls (and later bad lengths of the
    /// session) give nil.
    func takeBadLengthToReport() -> UInt32? {
        let value = badLength.load(ordering: .relaxed)
        guard value != 0, value != Self.reported else { return nil }
        badLength.store(Self.reported, ordering: .relaxed)
        return UInt32(truncatingIfNeeded: value)
    }
}
