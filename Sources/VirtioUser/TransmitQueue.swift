import CVirtioShim
import VirtioCore

/// The driver side of a transmit virtqueue: frames go out in bursts, completions are reclaimed
/// lazily (only when descriptors run short), and the device is kicked only when it asked.
@usableFromInline
final class TransmitQueue {
    @usableFromInline let ring: SplitRingDriver
    @usableFromInline let pool: PacketPool
    @usableFromInline let kick: EventNotifier
    @usableFromInline let counters = QueueCounters()

    init(ring: SplitRingDriver, pool: PacketPool, kick: EventNotifier) {
        self.ring = ring
        self.pool = pool
        self.kick = kick
    }

    /// Returns completed buffers to the pool.
    @inlinable
    func reclaim() {
        let done = ring.usedCount()
        var i = 0
        while i < done {
            guard let (slot, _) = ring.takeUsed() else { break }
            pool.put(slot: slot)
            i &+= 1
        }
        QueueCounters.add(counters.completed, i)
    }

    /// Sends the first frames of `burst`; returns how many went. Sent buffers leave the burst;
    /// the rest stay at its front, still owned by the caller.
    @inlinable
    func transmit(_ burst: PacketBurst) -> Int {
        let wanted = burst.count
        if ring.freeDescriptors < wanted { reclaim() }
        let room = min(wanted, ring.freeDescriptors)
        var sent = 0
        var bytes = 0
        var dropped = 0
        var i = 0
        while i < room {
            let packet = burst.storage[i]
            i &+= 1
            guard packet.length >= 0, packet.length <= PacketPool.dataRoom, pool.owns(slot: packet.slot) else {
                // A frame that cannot fit its own buffer, or a buffer of another queue pair's
                // pool, is the caller's bug: drop it and count it (`put` refuses a foreign slot
                // and counts it as an invalid release rather than adopt it).
                pool.put(slot: packet.slot)
                dropped &+= 1
                continue
            }
            let header = packet.data - VirtioNetHeader.size
            // A zero header: no offloads, num_buffers unused on transmit.
            header.storeBytes(of: 0, as: UInt64.self)
            (header + 8).storeBytes(of: 0, as: UInt32.self)
            ring.add(
                address: UInt64(UInt(bitPattern: header)),
                length: UInt32(truncatingIfNeeded: packet.length &+ VirtioNetHeader.size),
                deviceWritable: false, cookie: packet.slot)
            sent &+= 1
            bytes &+= packet.length
        }
        if wanted > room { QueueCounters.add(counters.ringFull, wanted &- room) }
        if room > 0 {
            if ring.publish() {
                kick.signal()
                QueueCounters.add(counters.kicks, 1)
            }
            burst.removeFirst(room)
            QueueCounters.add(counters.packets, sent)
            QueueCounters.add(counters.bytes, bytes)
            if dropped > 0 { QueueCounters.add(counters.drops, dropped) }
        }
        return room
    }
}
