/// One task waiting for state guarded by lwIP's core lock: a reader for data, a writer for
/// send-buffer room, an acceptor for connections. The stack's callbacks ``wake()`` it.
final class CoreWaiter: @unchecked Sendable {
    /// Guarded by the core lock.
    private var continuation: CheckedContinuation<Void, Never>?

    /// Suspends the task (which must not hold the core lock) until `ready()`, checked with the
    /// lock held, or cancellation; returns false when cancelled. One waiting task at a time.
    func wait(until ready: () -> Bool) async -> Bool {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                LwIPCore.withCore {
                    // Checked under the lock the cancellation handler also takes: a cancel
                    // either came before (seen here) or finds the continuation stored.
                    if ready() || Task.isCancelled {
                        continuation.resume()
                    } else {
                        self.continuation?.resume()
                        self.continuation = continuation
                    }
                }
            }
        } onCancel: {
            LwIPCore.withCore { self.wake() }
        }
        return !Task.isCancelled
    }

    /// Resumes the waiting task, if any. With the core lock held.
    func wake() {
        continuation?.resume()
        continuation = nil
    }
}
