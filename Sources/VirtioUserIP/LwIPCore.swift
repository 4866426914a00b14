import CLwIP

/// lwIP's stack: one per process, started on first use, entered only with its core lock.
///
/// lwIP (as Debian builds it, with LWIP_TCPIP_CORE_LOCKING) runs its timers on its own
/// `tcpip_thread` and lets any other thread call its raw API while holding one mutex, the core
/// lock; a call without it aborts the process. Every lwIP call of this module, and every
/// data-path call on a device it drives, happens inside ``withCore(_:)``, so the lock also
/// serialises each queue pair's data path. lwIP's callbacks run with the lock already held:
/// they must not enter it again (it is not recursive), and only record state and resume tasks.
package enum LwIPCore {
    private static let started: Void = tcpip_init(nil, nil)

    /// Frames output while the holder of the lock works are batched (one burst per interface)
    /// when the holder is one of ours; lwIP's own thread (timers) sends each at once.
    /// Guarded by the core lock.
    nonisolated(unsafe) static var batching = false
    /// Interfaces whose batched frames go out when the lock is released. Guarded by the core lock.
    nonisolated(unsafe) static var interfaces: [InterfaceLink] = []

    /// Runs `body` holding the core lock; frames it made lwIP send leave in bursts at the end.
    package static func withCore<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        _ = started
        sys_lock_tcpip_core()
        batching = true
        defer {
            for link in interfaces { link.flush() }
            batching = false
            sys_unlock_tcpip_core()
        }
        return try body()
    }
}
