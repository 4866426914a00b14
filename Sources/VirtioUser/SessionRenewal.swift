import CVirtioShim
import VirtioCore

/// Nothing of one session reaches the next back-end's predecessor. A back-end that has left
/// can keep its mapping of the device's memory and its copies of the eventfds; so before a new
/// session shares them, the device puts fresh eventfds under the same fd numbers and, when it
/// can, fresh pages under the same addresses (`SharedMemoryRegion.renew()`).
extension VirtioUserDevice {
    /// How long a new session waits for the app to give back buffers it holds before it gives
    /// up on fresh memory (the pages of a held buffer cannot be replaced under the app).
    static let heldBufferWaitMilliseconds = 100

    /// Renews what the last session shared: the eventfds always; the memory when no buffer is
    /// out with the app (waiting a little for them), or when the old memory was lost to a fault
    /// (then whatever the app holds reads as zeros). Call with the data path quiesced, before
    /// the rings are reset.
    func renewSharedResources() throws(VirtioError) {
        for pair in pairs {
            for notifier in pair.notifiers { try notifier.renew() }
        }
        let faults = memoryFaults()
        let faulted = faults != faultsAtRenewal.load(ordering: .relaxed)
        let deadline = MonotonicClock.deadline(milliseconds: Self.heldBufferWaitMilliseconds, after: MonotonicClock.nanoseconds())
        while true {
            let (held, failure) = withEveryPoolHeld { () -> (Int, VirtioError?) in
                let held = pairs.reduce(0) { $0 + $1.pool.count - $1.pool.available }
                guard held == 0 || faulted else { return (held, nil) }
                do throws(VirtioError) { try memory.renew() } catch { return (held, error) }
                return (held, nil)
            }
            if let failure {
                // Memory lost to a fault cannot carry a session; whole memory can, as it was.
                if faulted { throw failure }
                configuration.logger.warning("shared memory kept for the new session", metadata: [
                    "socket": "\(configuration.socketPath)",
                    "reason": "fresh memory could not be had (\(failure)), so a back-end that left may still map this memory",
                ])
                return
            }
            if held == 0 || faulted {
                faultsAtRenewal.store(faults, ordering: .relaxed)
                return
            }
            if MonotonicClock.nanoseconds() >= deadline {
                configuration.logger.warning("shared memory kept for the new session", metadata: [
                    "socket": "\(configuration.socketPath)",
                    "reason": "the app holds \(held) packet buffer(s), whose pages cannot be replaced under it, so a back-end that left may still map this memory; release buffers while the link is down to get fresh memory at each session",
                ])
                return
            }
            MonotonicClock.sleep(milliseconds: 5)
        }
    }

    /// Runs `body` with every pair's pool held by the control path.
    private func withEveryPoolHeld<T>(_ body: () -> T) -> T {
        for pair in pairs { pair.holdPool() }
        defer { for pair in pairs { pair.releasePool() } }
        return body()
    }

    /// SIGBUS faults absorbed in the device's memory since it was created (a back-end punched
    /// a hole in hugepage memory and the pool could not refill it).
    func memoryFaults() -> UInt64 {
        memoryGuardSlot >= 0 ? cvs_guard_faults(memoryGuardSlot) : 0
    }
}
