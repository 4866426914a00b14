import CLwIP
import VirtioUser

/// What went wrong in VirtioUserIP, and what to do about it.
public enum IPError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The peer answered the connection request with a reset: nothing listens at that port.
    case connectionRefused(IPEndpoint)
    /// The peer reset an established connection.
    case connectionReset
    /// The stack gave up on the peer: retransmissions or keepalive probes went unanswered.
    case timedOut
    /// This side closed or aborted the connection or socket; it cannot be used any more.
    case closed
    /// Another listener or socket of this process already holds the port.
    case addressInUse(port: UInt16)
    /// No interface of the stack reaches the destination (outside every prefix, and no gateway).
    case noRoute(IPAddress)
    /// The stack could not allocate memory for the operation.
    case outOfMemory
    /// The task waiting on the operation was cancelled.
    case cancelled
    /// A setting or argument that cannot work; the text says which and why.
    case invalidArgument(String)
    /// The interface could not start; the text says why.
    case interfaceFailure(String)
    /// The interface was closed: its connections, listeners and sockets end with it.
    case interfaceClosed
    /// The device an interface made for itself could not start (no back-end at the socket, …).
    case device(VirtioError)
    /// Any other lwIP error (its err_t code and name).
    case stack(code: Int, name: String)

    public var description: String {
        switch self {
        case .connectionRefused(let endpoint): return "connection to \(endpoint) refused: nothing listens there"
        case .connectionReset: return "connection reset by the peer"
        case .timedOut: return "connection timed out: the peer stopped answering (retransmissions or keepalives ran out)"
        case .closed: return "the connection or socket is closed"
        case .addressInUse(let port): return "port \(port) is in use by another listener or socket of this process"
        case .noRoute(let address): return "no route to \(address): it is outside the interface's prefix and there is no gateway"
        case .outOfMemory: return "the IP stack is out of memory"
        case .cancelled: return "cancelled"
        case .invalidArgument(let text): return "invalid argument: \(text)"
        case .interfaceFailure(let text): return "the IP interface failed: \(text)"
        case .interfaceClosed: return "the IP interface was closed"
        case .device(let error): return "the interface's device could not start: \(error)"
        case .stack(let code, let name): return "lwIP error \(code) (\(name))"
        }
    }

    /// The error for lwIP's `err`; `connecting` turns a reset into a refusal.
    init(lwip err: err_t, connectingTo endpoint: IPEndpoint? = nil) {
        switch Int32(err) {
        case ERR_RST.rawValue: self = endpoint.map { .connectionRefused($0) } ?? .connectionReset
        case ERR_ABRT.rawValue: self = .timedOut
        case ERR_CLSD.rawValue, ERR_CONN.rawValue: self = .closed
        case ERR_MEM.rawValue, ERR_BUF.rawValue: self = .outOfMemory
        case ERR_RTE.rawValue: self = endpoint.map { .noRoute($0.address) } ?? .stack(code: Int(err), name: "ERR_RTE")
        default: self = .stack(code: Int(err), name: Self.name(of: err))
        }
    }

    /// A failed bind of `port`.
    init(binding err: err_t, port: UInt16) {
        self = err == err_t(ERR_USE.rawValue) ? .addressInUse(port: port) : IPError(lwip: err)
    }

    /// lwIP's name for `err` (its build has no lwip_strerr).
    static func name(of err: err_t) -> String {
        let names = ["ERR_OK", "ERR_MEM", "ERR_BUF", "ERR_TIMEOUT", "ERR_RTE", "ERR_INPROGRESS", "ERR_VAL", "ERR_WOULDBLOCK",
                     "ERR_USE", "ERR_ALREADY", "ERR_ISCONN", "ERR_CONN", "ERR_IF", "ERR_ABRT", "ERR_RST", "ERR_CLSD", "ERR_ARG"]
        let index = -Int(err)
        return index >= 0 && index < names.count ? names[index] : "unknown"
    }
}

extension err_t {
    static let ok = err_t(ERR_OK.rawValue)
    static let memory = err_t(ERR_MEM.rawValue)
    static let aborted = err_t(ERR_ABRT.rawValue)
    static let value = err_t(ERR_VAL.rawValue)
}
