import Synchronization
import VirtioCore

/// Receive queue 0, transmit queue 1 and their packet pool: everything the hot path touches.
///
/// One thread at a time drives a pair. The control path (start/stop) coordinates with it
/// through two flags: `running` (may bursts run?) and `inBurst` (is one running now?), so stop
/// can wait for a burst in progress instead of pulling the rings from under it.
@usableFromInline
final class QueuePair: @unchecked Sendable {
    @usableFromInline let rx: ReceiveQueue
    @usableFromInline let tx: TransmitQueue
    @usableFromInline let pool: PacketPool
    @usableFromInline let running = Atomic<Bool>(false)
    @usableFromInline let inBurst = Atomic<Bool>(false)

    init(rx: ReceiveQueue, tx: TransmitQueue, pool: PacketPool) {
        self.rx = rx
        self.tx = tx
        self.pool = pool
    }

    /// Enters a burst; false when the pair is stopped (then do nothing).
    @inlinable
    func enter() -> Bool {
        // Sequentially consistent on both sides (here and in `quiesce`): either stop sees our
        // flag and waits, or we see `running` false and back out.
        inBurst.store(true, ordering: .sequentiallyConsistent)
        if running.load(ordering: .sequentiallyConsistent) { return true }
        inBurst.store(false, ordering: .releasing)
        return false
    }

    @inlinable
    func leave() {
        inBurst.store(false, ordering: .releasing)
    }

    /// Stops new bursts and waits for one in progress to finish.
    func quiesce() {
        running.store(false, ordering: .sequentiallyConsistent)
        while inBurst.load(ordering: .acquiring) { sched_yield() }
    }

    /// After the back-end let go of the rings (call only while quiesced): every buffer in
    /// flight returns to the pool. Transmit frames that were never completed count as drops.
    func reclaimAll() {
        // Completions the back-end did report were delivered: collect them normally first.
        tx.reclaim()
        rx.ring.reclaimAll { pool.put(slot: $0) }
        var lost = 0
        tx.ring.reclaimAll {
            pool.put(slot: $0)
            lost += 1
        }
        QueueCounters.add(tx.counters.drops, lost)
    }

    /// The first ring-protocol violation of the session, counted once on its queue.
    func takeViolation() -> String? {
        for (ring, counters) in [(rx.ring, rx.counters), (tx.ring, tx.counters)] {
            if let violation = ring.violation {
                QueueCounters.add(counters.errors, 1)
                return violation
            }
        }
        return nil
    }

    /// Fresh rings for a new session, with every receive descriptor holding an empty buffer.
    func resetRings() {
        reclaimAll()
        rx.ring.reset()
        tx.ring.reset()
        // We poll: ask the back-end not to signal the call eventfds (reset cleared the flag).
        rx.ring.setInterruptsEnabled(false)
        tx.ring.setInterruptsEnabled(false)
        rx.refill()
    }
}

#if canImport(Glibc)
import Glibc
#endif
