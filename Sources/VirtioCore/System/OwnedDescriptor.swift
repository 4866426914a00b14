#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor with one owner, closed exactly once when the owner lets go.
///
/// Descriptors cross threads (a socket closed by `stop()` while another thread waits on it), so
/// the object is `Sendable`; the raw value itself never changes.
@usableFromInline package final class OwnedDescriptor: Sendable, CustomStringConvertible {
    /// The raw descriptor number, valid while this object is alive.
    @usableFromInline package let raw: Int32

    /// Takes ownership of `raw`; it is closed when this object is released.
    @usableFromInline package init(taking raw: Int32) {
        self.raw = raw
    }

    deinit {
        _ = Glibc.close(raw)
    }

    @usableFromInline package var description: String { "fd \(raw)" }
}
