import VirtioCore

/// The front-end (driver) side of a vhost-user session: a typed call per request, each reply
/// checked for its request code, reply flag, size and value.
///
/// Once REPLY_ACK is negotiated, every request without a reply of its own asks for an ack, so
/// a back-end that rejects something says so at that message instead of failing silently.
@usableFromInline package final class VhostUserFrontend {
    /// The framed connection.
    @usableFromInline package let channel: VhostUserChannel
    /// How long each reply may take.
    @usableFromInline package let replyTimeoutMilliseconds: Int
    /// Protocol features in force (after ``setProtocolFeatures(_:)``).
    @usableFromInline package private(set) var protocolFeatures: VhostUserProtocolFeatures = []
    /// Every request sent, in order (the control path is short; tests and traces read it).
    @usableFromInline package private(set) var sentRequests: [VhostUserRequest] = []

    /// Starts a session on a connected socket.
    @usableFromInline package init(socket: OwnedDescriptor, replyTimeoutMilliseconds: Int = 5000) {
        channel = VhostUserChannel(socket: socket)
        self.replyTimeoutMilliseconds = replyTimeoutMilliseconds
    }

    @usableFromInline package func setOwner() throws(VirtioError) { try perform(.setOwner) }

    @usableFromInline package func resetOwner() throws(VirtioError) { try perform(.resetOwner) }

    @usableFromInline package func getFeatures() throws(VirtioError) -> VirtioFeatures {
        VirtioFeatures(rawValue: try query(.getFeatures))
    }

    @usableFromInline package func setFeatures(_ features: VirtioFeatures) throws(VirtioError) { try perform(.setFeatures(features)) }

    @usableFromInline package func getProtocolFeatures() throws(VirtioError) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures(rawValue: try query(.getProtocolFeatures))
    }

    /// Sets the protocol features; from here on REPLY_ACK (if included) is used.
    @usableFromInline package func setProtocolFeatures(_ features: VhostUserProtocolFeatures) throws(VirtioError) {
        try perform(.setProtocolFeatures(features))
        protocolFeatures = features
    }

    @usableFromInline package func getQueueNum() throws(VirtioError) -> UInt64 { try query(.getQueueNum) }

    /// Shares memory: one fd per region.
    @usableFromInline package func setMemTable(_ regions: [MemoryRegionDescriptor], descriptors: [Int32]) throws(VirtioError) {
        guard regions.count == descriptors.count, (1...MemoryRegionDescriptor.maximumCount).contains(regions.count) else {
            throw .invalid("memory regions", regions.count, "SET_MEM_TABLE takes 1…\(MemoryRegionDescriptor.maximumCount) regions, each with one fd")
        }
        try perform(.setMemTable(regions), descriptors: descriptors)
    }

    @usableFromInline package func setVringNum(index: UInt32, size: UInt32) throws(VirtioError) {
        try perform(.setVringNum(VringState(index: index, num: size)))
    }

    @usableFromInline package func setVringBase(index: UInt32, base: UInt32) throws(VirtioError) {
        try perform(.setVringBase(VringState(index: index, num: base)))
    }

    @usableFromInline package func setVringAddr(_ address: VringAddress) throws(VirtioError) { try perform(.setVringAddr(address)) }

    @usableFromInline package func setVringKick(index: UInt32, notifier: EventNotifier) throws(VirtioError) {
        try checkFileIndex(index, .setVringKick)
        try perform(.setVringKick(VringFile(index: index, hasDescriptor: true)), descriptors: [notifier.descriptor.raw])
    }

    @usableFromInline package func setVringCall(index: UInt32, notifier: EventNotifier) throws(VirtioError) {
        try checkFileIndex(index, .setVringCall)
        try perform(.setVringCall(VringFile(index: index, hasDescriptor: true)), descriptors: [notifier.descriptor.raw])
    }

    @usableFromInline package func setVringEnable(index: UInt32, enabled: Bool) throws(VirtioError) {
        try perform(.setVringEnable(VringState(index: index, num: enabled ? 1 : 0)))
    }

    /// Stops ring `index` and returns where the back-end stopped (its next available index).
    @usableFromInline package func getVringBase(index: UInt32) throws(VirtioError) -> UInt32 {
        try send(.getVringBase(VringState(index: index, num: 0)))
        let frame = try awaitReply(to: .getVringBase, size: 8)
        var reader = WireReader(frame.payload)
        let state = VringState(index: reader.u32(), num: reader.u32())
        guard state.index == index else {
            throw .peerProtocol(.badReply(to: "GET_VRING_BASE for ring \(index)", problem: "it names ring \(state.index)"))
        }
        return state.num
    }

    @usableFromInline package func setStatus(_ status: VirtioDeviceStatus) throws(VirtioError) { try perform(.setStatus(status.rawValue)) }

    /// Tells the back-end our MTU (NET_SET_MTU; acknowledged with REPLY_ACK when in force).
    @usableFromInline package func netSetMTU(_ mtu: Int) throws(VirtioError) { try perform(.netSetMTU(UInt64(mtu))) }

    /// Reads `size` bytes of the device configuration space from `offset` (GET_CONFIG). The
    /// reply must echo the window and carry exactly its bytes.
    @usableFromInline package func getConfig(offset: UInt32, size: UInt32) throws(VirtioError) -> [UInt8] {
        guard size <= VhostUserConfigSpace.maximumSize else {
            throw .invalid("GET_CONFIG size", size, "at most \(VhostUserConfigSpace.maximumSize) bytes may be asked for")
        }
        try send(.getConfig(VhostUserConfigSpace(offset: offset, size: size)))
        let frame = try awaitReply(to: .getConfig, size: VhostUserConfigSpace.headerByteCount + Int(size))
        let space = try VhostUserConfigSpace(decoding: frame.payload, request: .getConfig)
        guard space.offset == offset, space.size == size else {
            throw .peerProtocol(.badReply(to: "GET_CONFIG for \(size) bytes at \(offset)", problem: "it is for \(space.size) bytes at \(space.offset)"))
        }
        return space.payload
    }

    @usableFromInline package func getStatus() throws(VirtioError) -> VirtioDeviceStatus {
        let value = try query(.getStatus)
        guard value <= 0xFF else {
            throw .peerProtocol(.badReply(to: "GET_STATUS", problem: "0x\(String(value, radix: 16)) is not an 8-bit status"))
        }
        return VirtioDeviceStatus(rawValue: UInt8(value))
    }

    // MARK: - Mechanics

    /// Kick/call payloads carry the ring index in 8 bits: a larger one would spill into the
    /// no-fd flag and mean something else entirely.
    private func checkFileIndex(_ index: UInt32, _ request: VhostUserRequest) throws(VirtioError) {
        guard UInt64(index) <= VringFile.indexMask else {
            throw .invalid("ring index of \(request)", index, "vhost-user carries ring indices 0…255 in this message")
        }
    }

    private var usesReplyAck: Bool { protocolFeatures.contains(.replyAck) }

    private func send(_ message: VhostUserMessage, needReply: Bool = false, descriptors: [Int32] = []) throws(VirtioError) {
        sentRequests.append(message.request)
        try channel.send(message, needReply: needReply, descriptors: descriptors)
    }

    /// A request without a reply of its own: acknowledged when REPLY_ACK is in force.
    private func perform(_ message: VhostUserMessage, descriptors: [Int32] = []) throws(VirtioError) {
        let ack = usesReplyAck
        try send(message, needReply: ack, descriptors: descriptors)
        guard ack else { return }
        let frame = try awaitReply(to: message.request, size: 8)
        var reader = WireReader(frame.payload)
        let status = reader.u64()
        guard status == 0 else {
            throw .negotiation(.requestRejected(request: "\(message.request)", status: status))
        }
    }

    /// A request answered by a u64.
    private func query(_ message: VhostUserMessage) throws(VirtioError) -> UInt64 {
        try send(message)
        let frame = try awaitReply(to: message.request, size: 8)
        var reader = WireReader(frame.payload)
        return reader.u64()
    }

    private func awaitReply(to request: VhostUserRequest, size: Int) throws(VirtioError) -> VhostUserFrame {
        let frame = try channel.receive(timeoutMilliseconds: replyTimeoutMilliseconds)
        guard frame.header.request == request else {
            throw .peerProtocol(.badReply(to: "\(request)", problem: "the back-end sent \(frame.header.request) instead"))
        }
        guard frame.header.isReply else {
            throw .peerProtocol(.badReply(to: "\(request)", problem: "it lacks the reply flag"))
        }
        guard frame.payload.count == size else {
            throw .peerProtocol(.badReply(to: "\(request)", problem: "it has \(frame.payload.count) payload bytes; \(size) expected"))
        }
        guard frame.descriptors.isEmpty else {
            throw .peerProtocol(.badReply(to: "\(request)", problem: "it carried \(frame.descriptors.count) unexpected file descriptor(s)"))
        }
        return frame
    }
}
