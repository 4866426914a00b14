import SystemPackage

/// Why the peer could not be reached, or the connection to it was lost.
public enum ConnectionFailure: Sendable, Equatable, CustomStringConvertible {
    /// Connecting to the socket at `path` failed with `errno` (for ENOENT and ECONNREFUSED, after
    /// retrying for the connect timeout): nobody listens there, or we may not open it.
    case unreachable(path: String, errno: Errno)
    /// In server mode, no peer connected to the socket at `path` within `milliseconds`.
    case noPeerConnected(path: String, milliseconds: Int)
    /// The peer did not read what we sent, or did not answer, within its time (`waitingFor`
    /// names what was due); it may be hung.
    case timedOut(waitingFor: String)
    /// The peer closed or reset the connection while we were `during` something.
    case closedByPeer(during: String, errno: Errno?)
    /// Our own listening socket was closed (the object is stopping).
    case listenerClosed
    /// Another process listens on the socket file at `path`, or that cannot be ruled out.
    case socketInUse(path: String, detail: String)
    /// The file at `path` exists and is not a socket.
    case notASocket(path: String)

    public var description: String {
        switch self {
        case .unreachable(let path, let errno):
            let retryable = errno == .noSuchFileOrDirectory || errno == .connectionRefused || errno == .resourceTemporarilyUnavailable
            let advice = retryable
                ? "Is the vhost-user peer (the side in server mode) running and listening on \(path)?"
                : "Check that \(path) is a vhost-user socket you may open."
            return "connect(\(path)) failed: \(errno.description) (errno \(errno.rawValue)). \(advice)"
        case .noPeerConnected(let path, let milliseconds):
            return "No vhost-user back-end connected to \(path) within \(milliseconds) ms; start it in client mode (DPDK: iface=\(path),client=1)."
        case .timedOut(let what):
            return "The vhost-user peer did not answer in time (waiting for \(what)); it may be hung or not speak vhost-user."
        case .closedByPeer(let during, let errno):
            let how = errno == .connectionReset ? "reset the connection" : "closed the connection"
            let place = during.isEmpty ? "" : " \(during)"
            return "The vhost-user peer \(how)\(place); it stopped or crashed, and the session is over."
        case .listenerClosed:
            return "The listening socket was closed."
        case .socketInUse(let path, let detail):
            return "\(path) \(detail); stop that process or choose another path (a socket is removed only when nothing listens on it)."
        case .notASocket(let path):
            return "\(path) exists and is not a socket; choose another path or remove it."
        }
    }
}
