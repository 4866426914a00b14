#if canImport(Glibc)
import Glibc
#endif
import SystemPackage

/// The one error type of this package, by domain: match the case to react, print it to tell a
/// person (its ``description`` says what went wrong and what to do).
///
/// ```swift
/// do {
///     try device.start()
/// } catch .connection(.unreachable(_, .connectionRefused)) {
///     // nobody listens yet
/// } catch .negotiation(.queuePairs(let offered, _)) {
///     // ask for `offered` pairs instead
/// }
/// ```
public enum VirtioError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Reaching the peer, or keeping the connection to it, failed.
    case connection(ConnectionFailure)
    /// The peer and this side could not agree on features, queues or configuration.
    case negotiation(NegotiationFailure)
    /// Shared memory could not be had, or the peer took it away.
    case memory(MemoryFailure)
    /// The peer broke the virtqueue protocol in shared memory.
    case ringViolation(RingViolation)
    /// The peer broke the vhost-user message protocol.
    case peerProtocol(ProtocolViolation)
    /// A value the caller supplied is out of range.
    case configuration(InvalidSetting)
    /// The object is not in a state for this call.
    case state(StateFailure)
    /// A system call failed.
    case system(SystemCallFailure)

    /// The errno behind the failure, when a system call's result is what it rests on
    /// (swift-system's `Errno`: match it as `.noSuchFileOrDirectory`, `.connectionRefused`, …).
    public var errno: Errno? {
        switch self {
        case .system(let failure): failure.errno
        case .connection(.unreachable(_, let errno)): errno
        case .connection(.closedByPeer(_, let errno)): errno
        case .memory(.hugepagesUnavailable(_, _, let errno)): errno
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .connection(let failure): failure.description
        case .negotiation(let failure): failure.description
        case .memory(let failure): failure.description
        case .ringViolation(let violation): "\(violation.description) The session is ended; the peer has a bug, or is hostile."
        case .peerProtocol(let violation): violation.description
        case .configuration(let setting): setting.description
        case .state(let failure): failure.description
        case .system(let failure): failure.description
        }
    }

    /// A failed system call: `operation` names it, `errno` is the value it left, `hint` what to do.
    @usableFromInline package static func system(_ operation: String, errno code: Int32, hint: String = "") -> VirtioError {
        .system(SystemCallFailure(operation: operation, errno: Errno(rawValue: code), advice: hint))
    }

    /// A caller's value out of range: `field` names it, `requirement` says what is allowed.
    package static func invalid(_ field: String, _ value: some CustomStringConvertible, _ requirement: String) -> VirtioError {
        .configuration(InvalidSetting(field: field, value: value.description, requirement: requirement))
    }

    /// The peer's connection is gone (it closed, reset or stopped answering): nothing it sent
    /// was wrong, so a server counts it as a departure, not a protocol error.
    package var isDeparture: Bool {
        switch self {
        case .connection(.closedByPeer), .connection(.listenerClosed): true
        default: false
        }
    }

    /// The peer sent something no correct peer sends.
    package var isPeerViolation: Bool {
        switch self {
        case .peerProtocol, .ringViolation: true
        case .memory(.outsideSharedMemory), .memory(.regionShrunk), .memory(.unreadable): true
        default: false
        }
    }
}
