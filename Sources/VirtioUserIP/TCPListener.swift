import CLwIP

/// A listening TCP port: accepted connections as an `AsyncSequence`.
///
/// Connections the app has not taken yet wait in a queue of `backlog`; past it, new ones are
/// reset. ``close()`` stops listening (connections already accepted go on).
public final class TCPListener: AsyncSequence, @unchecked Sendable {
    public typealias Element = TCPConnection
    public typealias Failure = IPError

    public let port: UInt16
    private let backlog: Int
    private let link: InterfaceLink
    // Guarded by lwIP's core lock.
    private var pcb: UnsafeMutablePointer<tcp_pcb>?
    private var pending: [TCPConnection] = []
    private let acceptor = CoreWaiter()

    /// With the core lock held: listens on `port` of `link`'s interface (IPv4 and IPv6).
    package init(port: UInt16, backlog: Int, link: InterfaceLink) throws(IPError) {
        self.port = port
        self.backlog = backlog
        self.link = link
        guard link.isAttached else { throw .interfaceClosed }
        guard !link.tcpPorts.contains(port) else { throw .addressInUse(port: port) }
        guard let fresh = tcp_new_ip_type(UInt8(IPADDR_TYPE_ANY.rawValue)) else { throw .outOfMemory }
        clwip_tcp_reuse_address(fresh)
        tcp_bind_netif(fresh, link.netif)
        let bound = tcp_bind(fresh, clwip_any_address(), port)
        guard bound == .ok else {
            tcp_abort(fresh)
            throw IPError(binding: bound, port: port)
        }
        // With SO_REUSEADDR, tcp_listen refuses a second listener on one address and port
        // whatever their interfaces (tcp_input itself tells them apart by interface). Ours are
        // unique per interface already: listen without it, then set it again for other
        // interfaces' binds of this port.
        clwip_tcp_clear_reuse_address(fresh)
        var err = err_t.ok
        guard let listening = tcp_listen_with_backlog_and_err(fresh, UInt8(clamping: backlog), &err) else {
            tcp_abort(fresh)
            throw IPError(binding: err, port: port)
        }
        clwip_tcp_reuse_address(listening)
        pcb = listening
        link.tcpPorts.insert(port)
        link.listeners[ObjectIdentifier(self)] = self
        tcp_arg(listening, Unmanaged.passRetained(self).toOpaque())
        tcp_accept(listening) { arg, newPCB, err in
            guard let arg, let newPCB, err == .ok else { return .value }
            return Unmanaged<TCPListener>.fromOpaque(arg).takeUnretainedValue().accepted(newPCB)
        }
    }

    private func accepted(_ newPCB: UnsafeMutablePointer<tcp_pcb>) -> err_t {
        guard pending.count < backlog else {
            tcp_abort(newPCB)
            return .aborted
        }
        let remote = IPEndpoint(address: IPAddress(lwip: &newPCB.pointee.remote_ip), port: newPCB.pointee.remote_port)
        pending.append(TCPConnection(pcb: newPCB, connected: true, remote: remote, link: link))
        acceptor.wake()
        return .ok
    }

    /// Stops listening and resets the connections nobody accepted. Idempotent.
    public func close() {
        LwIPCore.withCore { closeWithCore() }
    }

    /// ``close()`` with the core lock held (the interface's close, too).
    func closeWithCore() {
        guard let pcb else { return }
        tcp_arg(pcb, nil)
        tcp_accept(pcb, nil)
        _ = tcp_close(pcb)  // a listening pcb closes without memory
        self.pcb = nil
        link.tcpPorts.remove(port)
        link.listeners[ObjectIdentifier(self)] = nil
        acceptor.wake()
        for connection in pending { connection.abortWithCore() }
        pending = []
        Unmanaged.passUnretained(self).release()
    }

    /// Resets the connections nobody accepted yet (the fuzz harness, between inputs). With the
    /// core lock held. Returns how many there were.
    @discardableResult
    package func resetPendingWithCore() -> Int {
        defer { pending = [] }
        for connection in pending { connection.abortWithCore() }
        return pending.count
    }

    /// The next connection; nil once the listener is closed.
    func nextConnection() async throws(IPError) -> TCPConnection? {
        while true {
            let next = LwIPCore.withCore { () -> TCPConnection?? in
                if !pending.isEmpty { return pending.removeFirst() }
                return pcb == nil ? .some(nil) : nil
            }
            if let next { return next }
            guard await acceptor.wait(until: { !pending.isEmpty || pcb == nil }) else { throw .cancelled }
        }
    }

    public func makeAsyncIterator() -> Iterator { Iterator(listener: self) }

    public struct Iterator: AsyncIteratorProtocol {
        let listener: TCPListener

        public mutating func next() async throws(IPError) -> TCPConnection? {
            try await listener.nextConnection()
        }

        public mutating func next(isolation actor: isolated (any Actor)?) async throws(IPError) -> TCPConnection? {
            try await listener.nextConnection()
        }
    }
}
