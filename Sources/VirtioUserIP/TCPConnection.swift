import CLwIP

/// One TCP connection: its bytes as an `AsyncSequence` (``inbound``), writes that wait for
/// room in the send buffer, half-close and close.
///
/// Received bytes are acknowledged to the peer's window only as the app takes them, so a slow
/// reader slows the sender instead of growing a queue. Read from one task and write from one
/// task (two tasks reading one connection would each get some of the chunks). ``close()`` (or
/// ``abort()``) releases the connection; a connection neither closed nor failed stays open.
public final class TCPConnection: @unchecked Sendable {
    /// This side's address and port.
    public var local: IPEndpoint { LwIPCore.withCore { localEndpoint } }
    /// The peer's address and port.
    public let remote: IPEndpoint

    private let link: InterfaceLink
    // Guarded by lwIP's core lock.
    private var pcb: UnsafeMutablePointer<tcp_pcb>?
    private var chunks: [[UInt8]] = []
    private var peerFinished = false
    private var failure: IPError?
    private var connected: Bool
    private var localEndpoint: IPEndpoint
    private let reader = CoreWaiter()
    private let writer = CoreWaiter()

    /// With the core lock held: adopts `pcb`, whose callbacks now reach this object (which
    /// they keep alive until the connection is closed or fails).
    init(pcb: UnsafeMutablePointer<tcp_pcb>, connected: Bool, remote: IPEndpoint, link: InterfaceLink) {
        self.pcb = pcb
        self.connected = connected
        self.remote = remote
        self.link = link
        localEndpoint = IPEndpoint(address: IPAddress(lwip: &pcb.pointee.local_ip), port: pcb.pointee.local_port)
        tcp_arg(pcb, Unmanaged.passRetained(self).toOpaque())
        tcp_recv(pcb) { arg, _, frame, _ in
            guard let arg else {
                if let frame { pbuf_free(frame) }
                return .ok
            }
            TCPConnection.from(arg).received(frame)
            return .ok
        }
        tcp_sent(pcb) { arg, _, _ in
            if let arg { TCPConnection.from(arg).writer.wake() }
            return .ok
        }
        tcp_err(pcb) { arg, err in
            if let arg { TCPConnection.from(arg).failed(err) }
        }
        clwip_tcp_nodelay(pcb)
        link.connections[ObjectIdentifier(self)] = self
    }

    static func from(_ arg: UnsafeMutableRawPointer) -> TCPConnection {
        Unmanaged<TCPConnection>.fromOpaque(arg).takeUnretainedValue()
    }

    // MARK: Callbacks (core lock held)

    private func received(_ frame: UnsafeMutablePointer<pbuf>?) {
        guard let frame else {
            peerFinished = true
            reader.wake()
            return
        }
        var bytes = [UInt8](repeating: 0, count: Int(frame.pointee.tot_len))
        bytes.withUnsafeMutableBytes { _ = pbuf_copy_partial(frame, $0.baseAddress, frame.pointee.tot_len, 0) }
        pbuf_free(frame)
        chunks.append(bytes)
        reader.wake()
    }

    /// lwIP freed the pcb (reset, or it gave up on the peer).
    private func failed(_ err: err_t) {
        pcb = nil
        link.connections[ObjectIdentifier(self)] = nil
        failure = IPError(lwip: err, connectingTo: connected ? nil : remote)
        reader.wake()
        writer.wake()
        Unmanaged.passUnretained(self).release()
    }

    /// The connect callback: the handshake completed.
    func established() {
        connected = true
        if let pcb { localEndpoint = IPEndpoint(address: IPAddress(lwip: &pcb.pointee.local_ip), port: pcb.pointee.local_port) }
        writer.wake()
    }

    /// With the lock held: callbacks off, the pcb forgotten, our reference to ourselves dropped.
    private func detach() -> UnsafeMutablePointer<tcp_pcb>? {
        guard let pcb else { return nil }
        tcp_arg(pcb, nil)
        tcp_recv(pcb, nil)
        tcp_sent(pcb, nil)
        tcp_err(pcb, nil)
        self.pcb = nil
        link.connections[ObjectIdentifier(self)] = nil
        reader.wake()
        writer.wake()
        Unmanaged.passUnretained(self).release()
        return pcb
    }

    // MARK: API

    /// Waits until the handshake is done (for ``IPInterface/connect(to:)``).
    func waitUntilConnected() async throws(IPError) {
        let ready = await writer.wait { connected || failure != nil || pcb == nil }
        if let error = LwIPCore.withCore({ failure ?? (pcb == nil ? IPError.closed : nil) }) { throw error }
        guard ready else {
            abort()
            throw .cancelled
        }
    }

    /// The bytes the peer sends, in chunks (everything that arrived since the last one); ends
    /// when the peer half-closes, throws when the connection fails (``IPError/connectionReset``,
    /// ``IPError/timedOut``, ``IPError/interfaceClosed``) or this side closed it.
    public var inbound: Inbound { Inbound(connection: self) }

    /// Sends the UTF-8 of `text`.
    public func write(_ text: String) async throws(IPError) {
        try await write(Array(text.utf8))
    }

    /// Sends all of `bytes`, waiting while the send buffer is full (the peer's window and
    /// lwIP's 64 KiB buffer pace the writer).
    public func write(_ bytes: [UInt8]) async throws(IPError) {
        var offset = 0
        while offset < bytes.count {
            let sent = try send { sender in
                bytes.withUnsafeBytes { sender.offer(UnsafeRawBufferPointer(rebasing: $0[offset...]), more: false) }
            }
            offset += sent
            // Full: the sent callback (an acknowledgement freed room) or a failure wakes us.
            if sent == 0, !(await waitUntilWritable()) { throw .cancelled }
        }
    }

    /// Hands lwIP what fits of the bytes `body` offers, in one trip through the core lock,
    /// and sends it; never waits. Throws when the connection failed or closed, before or
    /// during the offers. (``write(_:)-([UInt8])`` and the swift-nio adapter's flush.)
    package func send<Result>(_ body: (inout Sender) -> Result) throws(IPError) -> Result {
        try LwIPCore.withCore { () throws(IPError) in
            guard let pcb else { throw failure ?? .closed }
            var sender = Sender(pcb: pcb)
            let result = body(&sender)
            if sender.taken > 0 { _ = tcp_output(pcb) }
            if let error = sender.failure { throw error }
            return result
        }
    }

    /// Offers bytes to lwIP's send buffer, inside ``send(_:)``.
    package struct Sender {
        fileprivate let pcb: UnsafeMutablePointer<tcp_pcb>
        /// Bytes taken so far in this trip.
        package private(set) var taken = 0
        /// What made lwIP refuse bytes, other than a full buffer; offers then take nothing.
        package private(set) var failure: IPError?

        fileprivate init(pcb: UnsafeMutablePointer<tcp_pcb>) { self.pcb = pcb }

        /// Copies as much of `bytes` as the send buffer has room for into it; returns how much
        /// (0 when full). `more` says more bytes follow at once (no PSH on this segment).
        package mutating func offer(_ bytes: UnsafeRawBufferPointer, more: Bool) -> Int {
            var offset = 0
            while offset < bytes.count, failure == nil, let base = bytes.baseAddress {
                let room = min(Int(clwip_tcp_sndbuf(pcb)), bytes.count - offset, Int(UInt16.max))
                guard room > 0, clwip_tcp_sndqueue_room(pcb) > 0 else { break }
                let followed = more || offset + room < bytes.count
                let flags = UInt8(TCP_WRITE_FLAG_COPY) | (followed ? UInt8(TCP_WRITE_FLAG_MORE) : 0)
                let err = tcp_write(pcb, base + offset, UInt16(room), flags)
                if err == .memory { break }
                guard err == .ok else {
                    failure = IPError(lwip: err)
                    break
                }
                offset += room
            }
            taken += offset
            return offset
        }
    }

    /// Waits until the send buffer has room again, or the connection failed or closed;
    /// false when the task was cancelled.
    package func waitUntilWritable() async -> Bool {
        await writer.wait(until: canSend)
    }

    /// Calls `callback` (with the core lock held: it must only hand work elsewhere) once the
    /// send buffer has room, or the connection failed or closed.
    package func whenWritable(_ callback: @escaping @Sendable () -> Void) {
        writer.notify(when: canSend, callback)
    }

    /// With the core lock held.
    private func canSend() -> Bool {
        guard let pcb else { return true }
        return clwip_tcp_sndbuf(pcb) > 0 && clwip_tcp_sndqueue_room(pcb) > 0
    }

    /// Half-close: sends FIN after what was written; reading goes on until the peer finishes.
    public func shutdownOutput() throws(IPError) {
        try LwIPCore.withCore { () throws(IPError) in
            guard let pcb else { throw failure ?? .closed }
            let err = tcp_shutdown(pcb, 0, 1)
            guard err == .ok else { throw IPError(lwip: err) }
        }
    }

    /// Closes both directions (what was written is still delivered) and releases the
    /// connection. Idempotent.
    public func close() {
        LwIPCore.withCore {
            guard let pcb = detach() else { return }
            // tcp_close fails only for want of memory; the connection then ends with a reset.
            if tcp_close(pcb) != .ok { tcp_abort(pcb) }
            failure = failure ?? .closed
        }
    }

    /// Ends the connection at once with a reset, discarding what was not sent.
    public func abort() {
        LwIPCore.withCore { abortWithCore() }
    }

    /// ``abort()`` with the core lock already held.
    func abortWithCore() {
        guard let pcb = detach() else { return }
        tcp_abort(pcb)
        failure = failure ?? .closed
    }

    /// The interface closes: the peer gets a reset, the app ``IPError/interfaceClosed``. With
    /// the core lock held.
    func interfaceClosedWithCore() {
        guard pcb != nil else { return }
        failure = .interfaceClosed
        abortWithCore()
    }

    /// Takes everything received so far as one chunk, if anything, and opens the window by its
    /// size: one trip through the core lock per burst of segments, not per segment. With the
    /// lock held.
    fileprivate func takeChunk() -> [UInt8]? {
        guard var chunk = chunks.first else { return nil }
        if chunks.count > 1 {
            chunk.reserveCapacity(chunks.reduce(0) { $0 + $1.count })
            for more in chunks.dropFirst() { chunk += more }
        }
        chunks.removeAll(keepingCapacity: true)
        // The window is at most 64 KiB, so what is queued fits tcp_recved's 16-bit count; opened
        // in 16-bit steps all the same.
        if let pcb {
            var left = chunk.count
            while left > 0 {
                let step = min(left, Int(UInt16.max))
                tcp_recved(pcb, UInt16(step))
                left -= step
            }
        }
        return chunk
    }

    /// What a read finds, without waiting (see ``receive()``).
    package enum Received {
        /// Everything that arrived since the last read.
        case bytes([UInt8])
        /// The peer half-closed: no more bytes will come.
        case end
        case failed(IPError)
    }

    /// Takes what arrived, if anything did: nil when a read would have to wait
    /// (``waitUntilReadable()``).
    package func receive() -> Received? {
        LwIPCore.withCore {
            if let chunk = takeChunk() { return .bytes(chunk) }
            if let failure { return .failed(failure) }
            if peerFinished { return .end }
            return nil
        }
    }

    /// Waits until ``receive()`` has something to return; false when the task was cancelled.
    package func waitUntilReadable() async -> Bool {
        await reader.wait(until: canReceive)
    }

    /// Calls `callback` (with the core lock held: it must only hand work elsewhere) once
    /// ``receive()`` has something to return.
    package func whenReadable(_ callback: @escaping @Sendable () -> Void) {
        reader.notify(when: canReceive, callback)
    }

    /// With the core lock held.
    private func canReceive() -> Bool { !chunks.isEmpty || failure != nil || peerFinished }

    fileprivate func nextChunk() async throws(IPError) -> [UInt8]? {
        while true {
            switch receive() {
            case .bytes(let chunk): return chunk
            case .end: return nil
            case .failed(let error): throw error
            case nil: guard await waitUntilReadable() else { throw .cancelled }
            }
        }
    }

    /// The bytes a connection receives; see ``TCPConnection/inbound``.
    public struct Inbound: AsyncSequence, Sendable {
        public typealias Element = [UInt8]
        public typealias Failure = IPError
        let connection: TCPConnection

        public func makeAsyncIterator() -> Iterator { Iterator(connection: connection) }

        public struct Iterator: AsyncIteratorProtocol {
            let connection: TCPConnection

            public mutating func next() async throws(IPError) -> [UInt8]? {
                try await connection.nextChunk()
            }

            public mutating func next(isolation actor: isolated (any Actor)?) async throws(IPError) -> [UInt8]? {
                try await connection.nextChunk()
            }
        }
    }
}
