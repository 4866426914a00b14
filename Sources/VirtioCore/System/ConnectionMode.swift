/// Which side of a vhost-user Unix socket listens.
public enum ConnectionMode: String, Sendable, CaseIterable {
    /// The peer listens; we connect (and reconnect).
    case client
    /// We listen; the peer connects (and reconnects).
    case server
}
