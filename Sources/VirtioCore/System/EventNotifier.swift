#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import SystemPackage

/// An eventfd used as a virtqueue kick or call notifier (non-blocking, close-on-exec).
///
/// Every notifier is shared with a peer, and O_NONBLOCK belongs to the open file the peer
/// holds too: it can clear the flag, empty the counter or fill it whenever it likes. So
/// ``signal()`` and ``drain()`` never sleep on its terms (see `cvs_peer_eventfd_signal`).
@usableFromInline package final class EventNotifier: Sendable {
    /// How long a write may block (the peer cleared O_NONBLOCK and filled the counter) before
    /// it is interrupted and ``signal()`` fails.
    @usableFromInline package static let writeTimeoutMilliseconds: Int32 = 10

    /// The descriptor, sent to the peer with SET_VRING_KICK / SET_VRING_CALL.
    @usableFromInline package let descriptor: OwnedDescriptor

    /// Creates a fresh eventfd with a zero count.
    @usableFromInline package init() throws(VirtioError) {
        let fd = try SystemCall.run("eventfd", hint: "Raise the open-file limit (ulimit -n) if it is exhausted.") {
            cvs_eventfd(0)
        }
        descriptor = OwnedDescriptor(taking: fd)
    }

    /// Wraps an eventfd received from a peer.
    @usableFromInline package init(adopting descriptor: OwnedDescriptor) {
        self.descriptor = descriptor
    }

    /// Puts a fresh eventfd, with a zero count, under the same fd number: a peer holding the
    /// old one can no longer signal us or see our signals. A thread polling the old one wakes
    /// only at its timeout.
    @usableFromInline package func renew() throws(VirtioError) {
        let fresh = try EventNotifier()
        guard cvs_dup_onto(fresh.descriptor.raw, descriptor.raw) >= 0 else {
            throw VirtioError.system("dup3 of a fresh eventfd", errno: errno)
        }
    }

    /// Wakes whoever polls the other end. Writes nothing while the counter is non-zero (the
    /// other end is already woken). Throws when the peer made the write block for
    /// ``writeTimeoutMilliseconds`` (it is hostile: end its session), or the fd failed.
    @inlinable
    package func signal() throws(VirtioError) {
        let result = cvs_peer_eventfd_signal(descriptor.raw, Self.writeTimeoutMilliseconds)
        if result != 0 { throw Self.signalFailure(result) }
    }

    /// Reads and clears the counter without ever sleeping; returns how many signals arrived
    /// since the last drain (0 when none, or when the fd failed).
    @discardableResult
    @usableFromInline package func drain() -> UInt64 {
        var value: UInt64 = 0
        return cvs_peer_eventfd_drain(descriptor.raw, &value) == 1 ? value : 0
    }

    /// What a failed signal stands for: a write that timed out is the peer's doing (it made
    /// our eventfd blocking and full); any other failure is the system call's.
    @usableFromInline
    package static func signalFailure(_ result: Int32) -> VirtioError {
        if result == -ETIMEDOUT {
            return .ringViolation(.kickBlocked(milliseconds: Int(writeTimeoutMilliseconds)))
        }
        return .system(SystemCallFailure(operation: "write to the peer's eventfd", errno: Errno(rawValue: -result)))
    }
}
