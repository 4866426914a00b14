#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim

/// An eventfd used as a virtqueue kick or call notifier (non-blocking, close-on-exec).
public final class EventNotifier: Sendable {
    /// The descriptor, sent to the peer with SET_VRING_KICK / SET_VRING_CALL.
    public let descriptor: OwnedDescriptor

    /// Creates a fresh eventfd with a zero count.
    public init() throws(VirtioError) {
        let fd = try SystemCall.run("eventfd", hint: "Raise the open-file limit (ulimit -n) if it is exhausted.") {
            cvs_eventfd(0)
        }
        descriptor = OwnedDescriptor(taking: fd)
    }

    /// Wraps an eventfd received from a peer.
    public init(adopting descriptor: OwnedDescriptor) {
        self.descriptor = descriptor
    }

    /// Adds one to the counter, waking whoever polls the other end. A full counter (EAGAIN)
    /// already means "signalled", so it is not an error.
    @inlinable
    public func signal() {
        var one: UInt64 = 1
        _ = SystemCall.attempt { Glibc.write(descriptor.raw, &one, 8) }
    }

    /// Reads and clears the counter; returns how many signals arrived since the last drain.
    @discardableResult
    public func drain() -> UInt64 {
        var value: UInt64 = 0
        let (n, _) = SystemCall.attempt { Glibc.read(descriptor.raw, &value, 8) }
        return n == 8 ? value : 0
    }
}
