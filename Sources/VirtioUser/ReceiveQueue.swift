import CVirtioShim
import VirtioCore

/// The driver side of a receive virtqueue: every free descriptor carries an empty buffer; used
/// ones are handed to the caller without copying and refilled in batches.
@usableFromInline
final class ReceiveQueue {
    @usableFromInline let ring: SplitRingDriver
    @usableFromInline let pool: PacketPool
    @usableFromInline let kick: EventNotifier
    @usableFromInline let counters = QueueCounters()
    /// Refill once at least this many descriptors are free (batching the avail publication).
    @usableFromInline let refillThreshold: Int

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

    /// Moves received frames into `burst` (up to its free space); returns how many.
    @inlinable
    func receive(into burst: PacketBurst) -> Int {
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
        if ring.freeDescriptors >= refillThreshold { refill() }
        if received > 0 {
            QueueCounters.add(counters.packets, received)
            QueueCounters.add(counters.bytes, bytes)
        }
        if dropped > 0 { QueueCounters.add(counters.drops, dropped) }
        return received
    }
}
