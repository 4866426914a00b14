#if canImport(Glibc)
import Glibc
#endif

/// A value behind a pthread mutex, for the control path (never the hot path).
///
/// Used instead of the standard library's `Mutex` because that one is built on raw futexes on
/// Linux, which ThreadSanitizer cannot see: every access it guards is then reported as a race,
/// hiding real ones. pthread mutexes are understood by TSan, and cost the same uncontended.
@usableFromInline package final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    /// Guards `value`.
    @usableFromInline package init(_ value: Value) {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock.
    @usableFromInline package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
