#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The one error type of this package: what went wrong, where, and what to do about it.
///
/// Every failure (a system call, a peer that broke the protocol, a bad argument) becomes a
/// `VirtioError` whose ``description`` is a complete sentence a user can act on.
public struct VirtioError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The broad class of failure, for programs that react differently to each.
    public enum Kind: String, Sendable, Equatable {
        /// A system call failed; ``VirtioError/errno`` says why.
        case system
        /// The peer sent something the protocol does not allow; the connection is closed.
        case protocolViolation
        /// The peer closed the connection or stopped answering.
        case peerGone
        /// A reply did not arrive in time.
        case timeout
        /// The peer lacks a feature we need, or asked for one we do not have.
        case unsupported
        /// A value the caller supplied is out of range.
        case invalidArgument
        /// Memory, descriptors or buffers ran out.
        case resourceExhausted
        /// The operation needs a state the object is not in (for example a stopped device).
        case invalidState
    }

    /// The class of failure.
    public let kind: Kind
    /// What failed and what to do, as one or two sentences.
    public let message: String
    /// The errno of a failed system call, when there was one (swift-system's `Errno`:
    /// match it as `.noSuchFileOrDirectory`, `.connectionRefused`, …).
    public let errno: Errno?

    /// Creates an error of `kind` with a message that says what to do; `errno` is the raw value
    /// a failed system call left, if any.
    public init(_ kind: Kind, _ message: String, errno: Int32? = nil) {
        self.kind = kind
        self.message = message
        self.errno = errno.map(Errno.init(rawValue:))
    }

    /// The same, with an `Errno` already typed.
    public init(_ kind: Kind, _ message: String, errno: Errno?) {
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    /// A failed system call: `operation` names it, `errno` is the value it left.
    @usableFromInline package static func system(_ operation: String, errno code: Int32, hint: String = "") -> VirtioError {
        let text = String(cString: strerror(code))
        let tail = hint.isEmpty ? "" : " \(hint)"
        return VirtioError(.system, "\(operation) failed: \(text) (errno \(code)).\(tail)", errno: code)
    }

    public var description: String { message }
}
