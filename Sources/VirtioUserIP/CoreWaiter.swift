/// Tasks waiting for state guarded by lwIP's core lock: readers for data, writers for
/// send-buffer room, acceptors for connections. The stack's callbacks ``wake()`` them all, and
/// each checks again whether what it waits for is there (several tasks iterating one listener
/// take turns that way).
final class CoreWaiter: @unchecked Sendable {
    /// Guarded by the core lock.
    private var continuations: [CheckedContinuation<Void, Never>] = []

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

    /// Resumes every waiting task. With the core lock held.
    func wake() {
        guard !continuations.isEmpty else { return }
        for continuation in continuations { continuation.resume() }
        continuations.removeAll(keepingCapacity: true)
    }
}
