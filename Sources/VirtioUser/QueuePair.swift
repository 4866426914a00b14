import CVirtioShim
import Synchronization
import VirtioCore

/// One queue pair — a receive queue, a transmit queue and their packet pool: everything the hot
/// path of one polling thread touches. Pair `n` is virtio-net receive queue `2n` and transmit
/// queue `2n + 1`.
///
/// One thread at a time drives a pair. The control path (start/stop, and the link monitor's
/// teardown and reconnection) coordinates with it through three flags: `running` (may bursts
/// run?), `inBurst` (is a burst or a pool operation running now?) and `controlHoldsPool` (the
/// control path is returning buffers to the pool or refilling from it), so it never touches
/// the rings or the pool under a data-path call.
@usableFromInline
final class QueuePair: @unchecked Sendable {
    @usableFromInline let rx: ReceiveQueue
    @usableFromInline let tx: TransmitQueue
    @usableFromInline let pool: PacketPool
    /// Signalled by the back-end when it used receive / transmit buffers (if we ask it to).
    let rxCall: EventNotifier
    let txCall: EventNotifier
    /// This pair's number.
    let index: Int
    @usableFromInline let running = Atomic<Bool>(false)
    @usableFromInline let inBurst = Atomic<Bool>(false)
    @usableFromInline let controlHoldsPool = Atomic<Bool>(false)
    /// The capture attached to this pair, for the data path to load once per burst (not
    /// retained here: `captureOwner` holds it while attached).
    @usableFromInline let capture = Atomic<Unmanaged<PacketCapture>?>(nil)
    private let captureOwner = Mutex<PacketCapture?>(nil)
    /// membarrier(2) is there: a data-path call enters with a compiler barrier between its
    /// store and its load, and the control path, which runs rarely, pays for both sides with
    /// ``cvs_heavy_fence()``. Without it every entry is a full fence, a locked instruction that
    /// also waits for the stores before it: a burst's frame writes, whose cache lines the
    /// back-end holds.
    @usableFromInline let asymmetricFences = cvs_asymmetric_fences_available() != 0

    init(index: Int, rx: ReceiveQueue, tx: TransmitQueue, pool: PacketPool, rxCall: EventNotifier, txCall: EventNotifier) {
        self.index = index
        self.rx = rx
        self.tx = tx
        self.pool = pool
        self.rxCall = rxCall
        self.txCall = txCall
    }

    /// The virtio ring index of the receive queue (the transmit queue's is one more).
    var rxRingIndex: UInt32 { UInt32(2 * index) }
    var txRingIndex: UInt32 { UInt32(2 * index + 1) }

    /// Enters a burst; false when the pair is stopped (then do nothing).
    @inlinable
    func enter() -> Bool {
        // A store then a load, against the control path's store then load (`quiesce`): either
        // it sees our flag and waits, or we see `running` false and back out.
        if announceThenCheck(running) { return true }
        inBurst.store(false, ordering: .releasing)
        return false
    }

    /// Sets `inBurst`, then loads `flag`, ordered against the control path's store to `flag`
    /// followed by ``controlFence()`` and a load of `inBurst`.
    @inlinable @inline(__always)
    func announceThenCheck(_ flag: borrowing Atomic<Bool>) -> Bool {
        if asymmetricFences {
            inBurst.store(true, ordering: .relaxed)
            cvs_light_fence()
            return flag.load(ordering: .acquiring)
        }
        inBurst.store(true, ordering: .sequentiallyConsistent)
        return flag.load(ordering: .sequentiallyConsistent)
    }

    /// The control path's side of ``announceThenCheck(_:)``: between its store and its load of
    /// `inBurst`.
    func controlFence() {
        if asymmetricFences { cvs_heavy_fence() }
    }

    @inlinable
    func leave() {
        inBurst.store(false, ordering: .releasing)
    }

    /// Enters a pool operation of the data side (allocate, release), which runs whether or not
    /// the link is up: waits while the control path holds the pool.
    @inlinable
    func enterPool() {
        while true {
            if !announceThenCheck(controlHoldsPool) { return }
            inBurst.store(false, ordering: .releasing)
            while controlHoldsPool.load(ordering: .acquiring) { sched_yield() }
        }
    }

    /// Runs `body` with the pool to the control path alone: waits for a data-path call in
    /// progress, and holds new allocate/release calls until it is done.
    func withPoolExclusive(_ body: () -> Void) {
        holdPool()
        body()
        releasePool()
    }

    /// The two halves of ``withPoolExclusive(_:)``, for holding every pair's pool at once.
    func holdPool() {
        controlHoldsPool.store(true, ordering: .sequentiallyConsistent)
        controlFence()
        while inBurst.load(ordering: .acquiring) { sched_yield() }
    }

    func releasePool() {
        controlHoldsPool.store(false, ordering: .releasing)
    }

    /// Every notifier of the pair, for renewing them between sessions.
    var notifiers: [EventNotifier] { [rx.kick, tx.kick, rxCall, txCall] }

    /// Attaches `capture`; fails when one is attached already.
    func attach(_ capture: PacketCapture) throws(VirtioError) {
        try captureOwner.withLock { (owner) throws(VirtioError) in
            guard owner == nil else {
                throw .state(.alreadyCapturing(queuePair: index))
            }
            owner = capture
            self.capture.store(Unmanaged.passUnretained(capture), ordering: .sequentiallyConsistent)
        }
    }

    /// Detaches the capture, once no burst can still be using it, and returns it.
    func detachCapture() -> PacketCapture? {
        captureOwner.withLock { owner in
            // As in `enter` (store, fence, load on both sides): a burst either sees nil, or has set
            // `inBurst` before its load, and we wait for it to leave.
            capture.store(nil, ordering: .sequentiallyConsistent)
            controlFence()
            while inBurst.load(ordering: .sequentiallyConsistent) { sched_yield() }
            defer { owner = nil }
            return owner
        }
    }

    /// What arming the receive notification found.
    enum ArmResult {
        /// The back-end will signal `rxCall` when it uses receive buffers.
        case armed
        /// Frames arrived meanwhile: receive them instead of sleeping.
        case framesWaiting
        /// The pair is stopped (link down): nothing will be signalled.
        case notRunning
    }

    /// Asks the back-end to signal `rxCall` when it uses receive buffers (clears
    /// VRING_AVAIL_F_NO_INTERRUPT), then looks once more: a frame used between the last
    /// receive and the request would otherwise sleep unnoticed (VIRTIO 1.1 §2.7.7.2).
    func armReceiveNotification() -> ArmResult {
        guard enter() else { return .notRunning }
        defer { leave() }
        rx.ring.setInterruptsEnabled(true)
        if rx.ring.usedCount() > 0 {
            rx.ring.setInterruptsEnabled(false)
            return .framesWaiting
        }
        return .armed
    }

    /// After the wait: polling again, so no more notifications (and the count is cleared,
    /// counting a wait the notification ended).
    func disarmReceiveNotification() {
        if rxCall.drain() > 0 { QueueCounters.add(rx.counters.wakeups, 1) }
        guard enter() else { return }
        defer { leave() }
        rx.ring.setInterruptsEnabled(false)
    }

    /// Stops new bursts and waits for one in progress to finish.
    func quiesce() {
        running.store(false, ordering: .sequentiallyConsistent)
        controlFence()
        while inBurst.load(ordering: .acquiring) { sched_yield() }
    }

    /// After the back-end let go of the rings (call only while quiesced): every buffer in
    /// flight returns to the pool. Transmit frames that were never completed count as drops.
    func reclaimAll() {
        withPoolExclusive { reclaimAllHoldingPool() }
    }

    private func reclaimAllHoldingPool() {
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
    func takeViolation() -> RingViolation? {
        for (violation, counters) in [(rx.violation, rx.counters), (tx.violation, tx.counters)] {
            if let violation {
                QueueCounters.add(counters.errors, 1)
                return violation
            }
        }
        return nil
    }

    /// Fresh rings for a new session in the format negotiated (packed or split), with every
    /// receive descriptor holding an empty buffer.
    func resetRings(packed: Bool) {
        withPoolExclusive {
            reclaimAllHoldingPool()
            rx.reset(packed: packed)
            tx.reset(packed: packed)
            // We poll: ask the back-end not to signal the call eventfds (reset cleared the flag).
            rx.ring.setInterruptsEnabled(false)
            tx.ring.setInterruptsEnabled(false)
            rx.refill()
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
