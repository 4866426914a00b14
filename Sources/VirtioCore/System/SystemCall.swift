#if canImport(Glibc)
import Glibc
#endif

/// Every system call of the package goes through here: EINTR is retried, -1 becomes a typed
/// error naming the call.
@usableFromInline package enum SystemCall {
    /// Runs `body` until it does not fail with EINTR; throws on any other failure.
    @inlinable
    package static func run<T: BinaryInteger>(
        _ operation: @autoclosure () -> String,
        hint: @autoclosure () -> String = "",
        _ body: () -> T
    ) throws(VirtioError) -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            let code = Glibc.errno
            if code == EINTR { continue }
            throw VirtioError.system(operation(), errno: code, hint: hint())
        }
    }

    /// Like ``run(_:hint:_:)`` but returns the errno instead of throwing (for calls whose
    /// failures are expected, such as EAGAIN on a non-blocking descriptor).
    @inlinable
    package static func attempt<T: BinaryInteger>(_ body: () -> T) -> (T, Int32) {
        while true {
            let result = body()
            if result >= 0 { return (result, 0) }
            let code = Glibc.errno
            if code != EINTR { return (result, code) }
        }
    }
}
