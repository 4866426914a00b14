import CVirtioShim
import VirtioCore

/// The driver side of a receive virtqueue: every free descriptor carries an empty buffer; used
/// ones are handed to the caller without copying and refilled in batches.
///
/// With mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF) the back-end may spread one frame
/// over several buffers, saying how many in the first one's header (`num_buffers`); the frame
/// then reaches the caller as a first segment and its continuations.
@usableFromInline
final class ReceiveQueue {
    @usableFromInline let ring: SplitRingDriver
    @usableFromInline let pool: PacketPool
    @usableFromInline let kick: EventNotifier
    @usableFromInline let counters = QueueCounters()
    /// Refill once at least this many descriptors are free (batching the avail publication).
    @usableFromInline let refillThreshold: Int
    /// VIRTIO_NET_F_MRG_RXBUF is in force (set by the control path while the pair is stopped).
    @exclusivity(unchecked) @usableFromInline var mergeable = false

    init(ring: SplitRingDriver, pool: PacketPool, kick: EventNotifier, refillThreshold: Int) {
        self.ring = ring
        self.pool = pool
        self.kick = kick
        self.refillThreshold = max(1, min(refillThreshold, ring.size))
    }

    /// Posts empty buffers on every free descriptor the pool can cover.
    @inlinable
    func refill() {
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
            kick.signal()
            QueueCounters.add(counters.kicks, 1)
        }
    }

    /// Moves received frames into `burst` (up to its free space); returns how many buffers
    /// were appended (frames, unless some span several buffers).
    @inlinable
    func receive(into burst: PacketBurst) -> Int {
        if mergeable { return receiveMergeable(into: burst) }
        let ready = min(ring.usedCount(), burst.space)
        var received = 0
        var bytes = 0
        var dropped = 0
        var i = 0
        while i < ready {
            i &+= 1
            guard let (slot, written) = ring.takeUsed() else { break }
            let length = Int(written) &- VirtioNetHeader.size
            guard length >= 0, length <= PacketPool.dataRoom else {
                // The device claims to have written more than the buffer holds (or less than a
                // header): do not trust the frame.
                pool.put(slot: slot)
                dropped &+= 1
                continue
            }
            burst.append(PacketBuffer(slot: slot, data: pool.dataPointer(slot: slot), length: length))
            received &+= 1
            bytes &+= length
        }
        finish(frames: received, bytes: bytes, dropped: dropped)
        return received
    }

    /// Receive with `num_buffers`: a frame is taken only once all its buffers are used and the
    /// burst has room for them all.
    @inlinable
    func receiveMergeable(into burst: PacketBurst) -> Int {
        let ready = ring.usedCount()
        var taken = 0
        var appended = 0
        var frames = 0
        var bytes = 0
        var dropped = 0
        while taken < ready, burst.space > 0 {
            guard let (firstSlot, _) = ring.peekUsed() else { break }
            // num_buffers: the last field of the header, just before the frame. Read once.
            let count = Int((pool.dataPointer(slot: firstSlot) - 2).load(as: UInt16.self).littleEndian)
            guard count >= 1, count <= ring.inFlight else {
                ring.reportViolation("num_buffers \(count) in a receive header, with \(ring.inFlight) buffers posted")
                break
            }
            guard count <= ready &- taken, count <= burst.space else { break }
            let start = burst.count
            var frameBytes = 0
            var valid = true
            var k = 0
            while k < count {
                guard let (slot, written) = ring.takeUsed() else { valid = false; break }
                taken &+= 1
                // The first buffer holds the header, then frame bytes; the others frame bytes
                // from their very start (where the header would be).
                let data = pool.dataPointer(slot: slot) - (k == 0 ? 0 : VirtioNetHeader.size)
                let length = Int(written) &- (k == 0 ? VirtioNetHeader.size : 0)
                burst.append(PacketBuffer(slot: slot, data: data, length: length, segments: k == 0 ? UInt16(truncatingIfNeeded: count) : 0))
                if length < 0 || length > pool.room(after: data, slot: slot) { valid = false }
                frameBytes &+= length
                k &+= 1
            }
            if !valid {
                // A length the buffer cannot hold: drop the whole frame, keep the buffers.
                while burst.count > start {
                    burst.held &-= 1
                    pool.put(slot: burst.storage[burst.count].slot)
                }
                dropped &+= 1
                if ring.violation != nil { break }
                continue
            }
            appended &+= count
            frames &+= 1
            bytes &+= frameBytes
        }
        finish(frames: frames, bytes: bytes, dropped: dropped)
        return appended
    }

    @inlinable
    func finish(frames: Int, bytes: Int, dropped: Int) {
        if ring.freeDescriptors >= refillThreshold { refill() }
        if frames > 0 {
            QueueCounters.add(counters.packets, frames)
            QueueCounters.add(counters.bytes, bytes)
        }
        if dropped > 0 { QueueCounters.add(counters.drops, dropped) }
    }
}
