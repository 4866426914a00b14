/// Tasks waiting for state guarded by lwIP's core lock: readers for data, writers for
/// send-buffer room, acceptors for connections. The stack's callbacks ``wake()`` them all, and
/// each checks again whether what it waits for is there (several tasks iterating one listener
/// take turns that way).
final class CoreWaiter: @unchecked Sendable {
    /// Guarded by the core lock.
    private var continuations: [CheckedContinuation<Void, Never>] = []
    /// Guarded by the core lock.
    private var callbacks: [@Sendable () -> Void] = []

    /// Suspends the task (which must not hold the core lock) until `ready()`, checked with the
    /// lock held, or cancellation; returns false when cancelled.
    func wait(until ready: () -> Bool) async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                LwIPCore.withCore {
                    // Checked under the lock the cancellation handler also takes: a cancel
                    // either came before (seen here) or finds the continuation stored.
                    if ready() || Task.isCancelled {
                        continuation.resume()
                    } else {
                        continuations.append(continuation)
                    }
                }
            }
        } onCancel: {
            LwIPCore.withCore { self.wake() }
        }
        return !Task.isCancelled
    }

    /// Calls `callback` once `ready()`, checked with the lock held: now, or at a later wake
    /// (which may come before it is ready: the callback checks again). It runs with the core
    /// lock held, on whichever thread woke it, so it must only hand work elsewhere (the
    /// swift-nio adapter's hop to its event loop: no task, no trip through the cooperative pool).
    func notify(when ready: () -> Bool, _ callback: @escaping @Sendable () -> Void) {
        LwIPCore.withCore {
            if ready() { callback() } else { callbacks.append(callback) }
        }
    }

    /// Resumes every waiting task and runs every callback. With the core lock held.
    func wake() {
        if !continuations.isEmpty {
            for continuation in continuations { continuation.resume() }
            continuations.removeAll(keepingCapacity: true)
        }
        if !callbacks.isEmpty {
            let due = callbacks
            callbacks.removeAll(keepingCapacity: true)
            for callback in due { callback() }
        }
    }
}
