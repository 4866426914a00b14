import CLwIP

/// A bound UDP port: received datagrams as an `AsyncSequence`, and sends.
///
/// Datagrams wait in a queue of `queueLimit` until the app takes them; past it, new ones are
/// dropped and counted, as a kernel socket's full buffer drops them.
public final class UDPSocket: @unchecked Sendable {
    /// One datagram and where it came from.
    public struct Datagram: Sendable {
        public var payload: [UInt8]
        public var remote: IPEndpoint
    }

    public let port: UInt16
    private let queueLimit: Int
    private let link: InterfaceLink
    private var netif: UnsafeMutablePointer<netif> { link.netif }
    // Guarded by lwIP's core lock.
    private var pcb: UnsafeMutablePointer<udp_pcb>?
    private var queue: [Datagram] = []
    private var queueHead = 0
    private var dropped = 0
    private let reader = CoreWaiter()

    /// With the core lock held: binds `port` (0: any free one) on `link`'s interface, IPv4 and IPv6.
    package init(port: UInt16, queueLimit: Int, link: InterfaceLink) throws(IPError) {
        self.queueLimit = queueLimit
        self.link = link
        guard link.isAttached else { throw .interfaceClosed }
        guard port == 0 || !link.udpPorts.contains(port) else { throw .addressInUse(port: port) }
        guard let fresh = udp_new_ip_type(UInt8(IPADDR_TYPE_ANY.rawValue)) else { throw .outOfMemory }
        clwip_udp_reuse_address(fresh)
        udp_bind_netif(fresh, link.netif)
        let bound = udp_bind(fresh, clwip_any_address(), port)
        guard bound == .ok else {
            udp_remove(fresh)
            throw IPError(binding: bound, port: port)
        }
        self.port = fresh.pointee.local_port
        link.udpPorts.insert(self.port)
        pcb = fresh
        link.sockets[ObjectIdentifier(self)] = self
        udp_recv(fresh, { arg, _, datagram, address, port in
            guard let datagram else { return }
            guard let arg, let address else { return pbuf_free(datagram).discard() }
            Unmanaged<UDPSocket>.fromOpaque(arg).takeUnretainedValue().received(datagram, from: IPEndpoint(address: IPAddress(lwip: address), port: port))
        }, Unmanaged.passRetained(self).toOpaque())
    }

    private func received(_ datagram: UnsafeMutablePointer<pbuf>, from remote: IPEndpoint) {
        defer { pbuf_free(datagram) }
        guard queue.count - queueHead < queueLimit else {
            dropped += 1
            return
        }
        var payload = [UInt8](repeating: 0, count: Int(datagram.pointee.tot_len))
        payload.withUnsafeMutableBytes { _ = pbuf_copy_partial(datagram, $0.baseAddress, datagram.pointee.tot_len, 0) }
        queue.append(Datagram(payload: payload, remote: remote))
        reader.wake()
    }

    /// Forgets the datagrams nobody took (the fuzz harness, between inputs). With the core lock
    /// held. Returns how many there were.
    @discardableResult
    package func discardQueuedWithCore() -> Int {
        defer { queue = []; queueHead = 0 }
        return queue.count - queueHead
    }

    /// Datagrams dropped because the app did not take them fast enough.
    public var drops: Int { LwIPCore.withCore { dropped } }

    /// Sends `payload` as one datagram to `remote` (fragmented when longer than the MTU allows).
    public func send(_ payload: [UInt8], to remote: IPEndpoint) throws(IPError) {
        guard payload.count <= 65_507 else { throw .invalidArgument("a UDP payload of \(payload.count) bytes is over 65,507") }
        try LwIPCore.withCore { () throws(IPError) in
            guard let pcb else { throw .closed }
            guard let datagram = pbuf_alloc(PBUF_TRANSPORT, UInt16(payload.count), PBUF_RAM) else { throw .outOfMemory }
            defer { pbuf_free(datagram) }
            _ = payload.withUnsafeBytes { pbuf_take(datagram, $0.baseAddress, UInt16(payload.count)) }
            var address = remote.address.lwip(on: netif)
            let err = udp_sendto(pcb, datagram, &address, remote.port)
            guard err == .ok else { throw IPError(lwip: err, connectingTo: err == err_t(ERR_RTE.rawValue) ? remote : nil) }
        }
    }

    /// Stops receiving and frees the port. Idempotent.
    public func close() {
        LwIPCore.withCore { closeWithCore() }
    }

    /// ``close()`` with the core lock held (the interface's close, too).
    func closeWithCore() {
        guard let pcb else { return }
        udp_remove(pcb)
        self.pcb = nil
        link.udpPorts.remove(port)
        link.sockets[ObjectIdentifier(self)] = nil
        reader.wake()
        Unmanaged.passUnretained(self).release()
    }

    /// The datagrams that arrive; ends when the socket is closed.
    public var datagrams: Datagrams { Datagrams(socket: self) }

    fileprivate func nextDatagram() async throws(IPError) -> Datagram? {
        while true {
            let next = LwIPCore.withCore { () -> Datagram?? in
                if queueHead < queue.count {
                    let datagram = queue[queueHead]
                    queueHead += 1
                    if queueHead == queue.count {
                        queue.removeAll(keepingCapacity: true)
                        queueHead = 0
                    }
                    return datagram
                }
                return pcb == nil ? .some(nil) : nil
            }
            if let next { return next }
            guard await reader.wait(until: { queueHead < queue.count || pcb == nil }) else { throw .cancelled }
        }
    }

    /// The datagrams a socket receives; see ``UDPSocket/datagrams``.
    public struct Datagrams: AsyncSequence, Sendable {
        public typealias Element = Datagram
        public typealias Failure = IPError
        let socket: UDPSocket

        public func makeAsyncIterator() -> Iterator { Iterator(socket: socket) }

        public struct Iterator: AsyncIteratorProtocol {
            let socket: UDPSocket

            public mutating func next() async throws(IPError) -> Datagram? {
                try await socket.nextDatagram()
            }

            public mutating func next(isolation actor: isolated (any Actor)?) async throws(IPError) -> Datagram? {
                try await socket.nextDatagram()
            }
        }
    }
}

extension u8_t {
    /// pbuf_free's count of freed buffers, unused.
    func discard() {}
}
