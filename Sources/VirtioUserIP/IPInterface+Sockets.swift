import CLwIP

extension IPInterface {
    /// Listens on TCP `port` of this interface (its IPv4 address and IPv6 link-local one). Other
    /// interfaces of the process may listen on the same port.
    /// Up to `backlog` connections wait for ``TCPListener``'s iteration; more are reset.
    public func listen(port: UInt16, backlog: Int = 128) throws(IPError) -> TCPListener {
        guard port != 0 else { throw .invalidArgument("listen on port 0: name the port clients will use") }
        guard backlog > 0 && backlog <= 255 else { throw .invalidArgument("backlog \(backlog) is not in 1...255") }
        return try LwIPCore.withCore { () throws(IPError) in try TCPListener(port: port, backlog: backlog, link: link) }
    }

    /// Opens a TCP connection to `remote` through this interface and waits for the handshake.
    /// Throws ``IPError/connectionRefused(_:)`` when the peer resets it, ``IPError/timedOut``
    /// when the peer never answers (once lwIP's SYN retries run out).
    public func connect(to remote: IPEndpoint) async throws(IPError) -> TCPConnection {
        let link = self.link
        let netif = link.netif
        let connection = try LwIPCore.withCore { () throws(IPError) -> TCPConnection in
            guard link.isAttached else { throw .interfaceClosed }
            guard let pcb = tcp_new_ip_type(UInt8(remote.address.isIPv4 ? IPADDR_TYPE_V4.rawValue : IPADDR_TYPE_V6.rawValue)) else {
                throw .outOfMemory
            }
            clwip_tcp_reuse_address(pcb)  // its ephemeral port may be another interface's listener's
            tcp_bind_netif(pcb, netif)
            let connection = TCPConnection(pcb: pcb, connected: false, remote: remote, link: link)
            var address = remote.address.lwip(on: netif)
            let err = tcp_connect(pcb, &address, remote.port) { arg, _, err in
                if let arg, err == .ok { TCPConnection.from(arg).established() }
                return .ok
            }
            guard err == .ok else {
                connection.abortWithCore()
                throw IPError(lwip: err, connectingTo: remote)
            }
            return connection
        }
        try await connection.waitUntilConnected()
        return connection
    }

    /// Binds UDP `port` (0: a free one) on this interface. Up to `queueLimit` datagrams wait for
    /// the app; more are dropped and counted.
    public func bindUDP(port: UInt16 = 0, queueLimit: Int = 1024) throws(IPError) -> UDPSocket {
        guard queueLimit > 0 else { throw .invalidArgument("queueLimit must be positive") }
        return try LwIPCore.withCore { () throws(IPError) in try UDPSocket(port: port, queueLimit: queueLimit, link: link) }
    }
}
