import CVirtioShim
import VhostUser
import VirtioCore

/// One front-end's session, the protocol side: the channel, the memory map, ring set-up and the
/// config space. The frames move in its ``dataPath``, which shares the map and the rings.
/// Driven by one thread.
///
/// Every message is validated before anything changes; an invalid one ends the session with
/// an error (after a failure REPLY_ACK when one was asked for), leaving the back-end free to
/// accept the next front-end. Dropping the object releases every mapping and fd it holds.
final class BackendConnection {
    let channel: VhostUserChannel
    let offeredFeatures: VirtioFeatures
    let offeredProtocolFeatures: VhostUserProtocolFeatures
    let memory = GuestMemoryMap()
    /// Two rings per queue pair: receive `2n`, transmit `2n + 1`.
    let vrings: [BackendVring]
    /// Queue pairs served (what GET_QUEUE_NUM answers).
    let queuePairs: Int
    /// Moves the frames, over `memory` and `vrings`.
    let dataPath: BackendDataPath
    /// What SET_FEATURES agreed.
    var features: VirtioFeatures { dataPath.features }
    private(set) var protocolFeatures: VhostUserProtocolFeatures = []
    private(set) var status: UInt8 = 0
    /// What GET_CONFIG serves: MAC, link status, pairs and MTU (NET_SET_MTU changes the MTU).
    private(set) var netConfig: VirtioNetConfig
    /// The MTU the front-end announced with NET_SET_MTU, if it did.
    private(set) var announcedMTU: Int?
    /// Reads the back-end's administrative link state (``VhostUserBackend/setLinkUp(_:)``).
    let linkUp: @Sendable () -> Bool
    /// The first ``tracedRequests`` requests received, in order (for traces).
    private(set) var received: [VhostUserRequest] = []
    /// How many requests a trace keeps: enough for any session's set-up, bounded against a
    /// front-end that sends requests forever.
    static let tracedRequests = 1024

    init(
        socket: OwnedDescriptor, offeredFeatures: VirtioFeatures, offeredProtocolFeatures: VhostUserProtocolFeatures,
        queuePairs: Int = 1, macAddress: MACAddress? = nil, mtu: Int = VirtioNetMTU.ethernetDefault,
        linkUp: @escaping @Sendable () -> Bool = { true }
    ) {
        channel = VhostUserChannel(socket: socket, sendTimeoutMilliseconds: Self.messageDeadlineMilliseconds)
        self.queuePairs = queuePairs
        self.linkUp = linkUp
        netConfig = VirtioNetConfig(
            macAddress: macAddress ?? MACAddress(0, 0, 0, 0, 0, 0), status: 0,
            maxQueuePairs: UInt16(queuePairs), mtu: UInt16(clamping: mtu))
        vrings = (0..<(2 * queuePairs)).map { BackendVring(index: $0) }
        dataPath = BackendDataPath(memory: memory, vrings: vrings, mtu: mtu)
        self.offeredFeatures = offeredFeatures
        self.offeredProtocolFeatures = offeredProtocolFeatures
    }

    /// Some queue pair's transmit ring carries traffic.
    var isRunning: Bool {
        var index = 1
        while index < vrings.count {
            if vrings[index].isLive { return true }
            index &+= 2
        }
        return false
    }

    /// How long a message may take to arrive once its first byte has, and a reply to leave:
    /// every front-end we know sends a message in one `sendmsg`, so only a hostile or hung one
    /// is ever cut off. It bounds what one session's control traffic costs the serving thread
    /// (and so a switch's other ports) per message.
    static let messageDeadlineMilliseconds = 100
    /// Messages handled per call of ``handlePendingMessages()``: a front-end that floods
    /// requests waits for the next round, while the data path and other ports run.
    static let messagesPerRound = 16

    /// Handles the messages waiting on the socket, at most ``messagesPerRound``; returns how
    /// many. Throws when the session must end.
    @discardableResult
    func handlePendingMessages() throws(VirtioError) -> Int {
        var handled = 0
        while handled < Self.messagesPerRound, try Poll.waitReadable(channel.socket.raw, milliseconds: 0) != .timedOut {
            try handleNextMessage()
            handled &+= 1
        }
        return handled
    }

    /// Reads and handles one message, which must be complete within
    /// ``messageDeadlineMilliseconds`` (call it once the socket is readable). Throws when the
    /// session must end.
    func handleNextMessage() throws(VirtioError) {
        let frame = try channel.receive(timeoutMilliseconds: Self.messageDeadlineMilliseconds)
        if received.count < Self.tracedRequests { received.append(frame.header.request) }
        let message: VhostUserMessage
        do {
            message = try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: frame.descriptors.count)
        } catch {
            if frame.header.needsReply { try? channel.reply(to: frame.header.request, payload: Self.ack(false)) }
            // A request we do not implement is refused, not fatal: the front-end may cope.
            if case .peerProtocol(.unsupportedRequest) = error { return }
            throw error
        }
        do {
            try handle(message, descriptors: frame.descriptors)
        } catch {
            if frame.header.needsReply && !message.hasReply {
                try? channel.reply(to: message.request, payload: Self.ack(false))
            }
            throw error
        }
        if frame.header.needsReply && !message.hasReply {
            try channel.reply(to: message.request, payload: Self.ack(true))
        }
    }

    private static func ack(_ success: Bool) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndianU64(success ? 0 : 1)
        return bytes
    }

    private func replyU64(_ request: VhostUserRequest, _ value: UInt64) throws(VirtioError) {
        var bytes: [UInt8] = []
        bytes.appendLittleEndianU64(value)
        try channel.reply(to: request, payload: bytes)
    }

    private func vring(_ index: UInt32, _ request: VhostUserRequest) throws(VirtioError) -> BackendVring {
        guard Int(index) < vrings.count else {
            throw .peerProtocol(.badRingSetup(ring: Int(index), problem: "\(request) names it; this back-end has rings 0…\(vrings.count - 1)"))
        }
        return vrings[Int(index)]
    }

    private func handle(_ message: VhostUserMessage, descriptors: [OwnedDescriptor]) throws(VirtioError) {
        switch message {
        case .setOwner:
            break
        case .resetOwner:
            for vring in vrings { vring.reset() }
            memory.clear()
            dataPath.apply([])
            status = 0
        case .getFeatures:
            try replyU64(.getFeatures, offeredFeatures.rawValue)
        case .setFeatures(let requested):
            guard offeredFeatures.isSuperset(of: requested) else {
                throw .peerProtocol(.beyondOffer(request: "SET_FEATURES", asked: requested.rawValue, offered: offeredFeatures.rawValue))
            }
            // The ring format is the session's, chosen here once (QEMU sends SET_FEATURES
            // again while rings run, to log dirty pages, but never with another format).
            if requested.contains(.ringPacked) != features.contains(.ringPacked), vrings.contains(where: { $0.ring != nil }) {
                throw .peerProtocol(.malformedMessage(request: "SET_FEATURES", problem: "the ring format changed while rings run; stop them (GET_VRING_BASE) first"))
            }
            dataPath.apply(requested)
            // Without protocol features a ring is enabled as soon as it starts (vhost-user.rst).
            if !requested.contains(.vhostUserProtocolFeatures) {
                for vring in vrings { vring.enabled = true }
            }
        case .getProtocolFeatures:
            try replyU64(.getProtocolFeatures, offeredProtocolFeatures.rawValue)
        case .setProtocolFeatures(let requested):
            guard offeredProtocolFeatures.isSuperset(of: requested) else {
                throw .peerProtocol(.beyondOffer(request: "SET_PROTOCOL_FEATURES", asked: requested.rawValue, offered: offeredProtocolFeatures.rawValue))
            }
            protocolFeatures = requested
        case .getQueueNum:
            try replyU64(.getQueueNum, UInt64(queuePairs))
        case .setMemTable(let regions):
            try memory.replace(with: regions, descriptors: descriptors)
            // Rings already running re-translate against the new table.
            for vring in vrings where vring.ring != nil { try vring.start(memory: memory) }
        case .setVringNum(let state):
            let vring = try vring(state.index, .setVringNum)
            if features.contains(.ringPacked) {
                guard PackedRingMemory.isValidSize(Int(state.num)) else {
                    throw .peerProtocol(.badRingSetup(ring: Int(state.index), problem: "SET_VRING_NUM \(state.num) for a packed ring is outside 1…32768"))
                }
            } else {
                guard SplitRingMemory.isValidSize(Int(state.num)) else {
                    throw .peerProtocol(.badRingSetup(ring: Int(state.index), problem: "SET_VRING_NUM \(state.num) is not a power of two up to 32768"))
                }
            }
            guard vring.ring == nil else {
                throw .peerProtocol(.badRingSetup(ring: Int(state.index), problem: "SET_VRING_NUM while it runs"))
            }
            vring.size = Int(state.num)
        case .setVringBase(let state):
            let vring = try vring(state.index, .setVringBase)
            // A packed ring's base is two 16-bit halves: the available position (with its wrap
            // counter in bit 15) low, the used one high (QEMU sends both; DPDK only the low
            // half). Every chain we take is used before the next burst, so the used position
            // equals the available one whenever the ring is stopped: the low half is all we keep.
            guard features.contains(.ringPacked) || state.num <= UInt32(UInt16.max) else {
                throw .peerProtocol(.badRingSetup(ring: Int(state.index), problem: "SET_VRING_BASE \(state.num) for a split ring does not fit a 16-bit index"))
            }
            guard vring.ring == nil else {
                throw .peerProtocol(.badRingSetup(ring: Int(state.index), problem: "SET_VRING_BASE while it runs"))
            }
            vring.base = UInt16(truncatingIfNeeded: state.num)
        case .setVringAddr(let address):
            let vring = try vring(address.index, .setVringAddr)
            vring.address = address
            if vring.ring != nil { try vring.start(memory: memory) }
        case .setVringKick(let file):
            let vring = try vring(file.index, .setVringKick)
            if let kick = descriptors.first { try PeerDescriptorCheck.requireEventFD(kick, .setVringKick, ring: file.index) }
            guard !memory.isEmpty else {
                throw .peerProtocol(.badRingSetup(ring: Int(file.index), problem: "SET_VRING_KICK before SET_MEM_TABLE"))
            }
            try vring.start(memory: memory)
            // Without an fd the ring is polled (bit 8 of the payload).
            vring.kick = descriptors.first.map { EventNotifier(adopting: $0) }
        case .setVringCall(let file):
            let vring = try vring(file.index, .setVringCall)
            if let call = descriptors.first { try PeerDescriptorCheck.requireEventFD(call, .setVringCall, ring: file.index) }
            vring.call = descriptors.first.map { EventNotifier(adopting: $0) }
        case .setVringErr(let file):
            _ = try vring(file.index, .setVringErr)
        case .setVringEnable(let state):
            let vring = try vring(state.index, .setVringEnable)
            // QEMU counts PROTOCOL_FEATURES as agreed once GET_FEATURES offered it, and sends
            // SET_VRING_ENABLE at device creation and every reset, before SET_FEATURES
            // (hw/virtio/vhost-user.c): only a front-end that was never offered it is wrong.
            guard offeredFeatures.contains(.vhostUserProtocolFeatures) else {
                throw .peerProtocol(.notNegotiated(request: "SET_VRING_ENABLE", feature: "VHOST_USER_F_PROTOCOL_FEATURES"))
            }
            guard state.num <= 1 else {
                throw .peerProtocol(.badRingSetup(ring: Int(state.index), problem: "SET_VRING_ENABLE \(state.num); only 0 and 1 are meaningful"))
            }
            vring.enabled = state.num == 1
        case .getVringBase(let state):
            let vring = try vring(state.index, .getVringBase)
            let base = UInt32(vring.stop())
            var bytes: [UInt8] = []
            bytes.appendLittleEndianU32(state.index)
            // Packed: the used half repeats the available one (see SET_VRING_BASE), so a
            // front-end that restores both (QEMU) resumes where we stopped.
            bytes.appendLittleEndianU32(features.contains(.ringPacked) ? base | base << 16 : base)
            try channel.reply(to: .getVringBase, payload: bytes)
        case .setStatus(let value):
            status = value
        case .getStatus:
            try replyU64(.getStatus, UInt64(status))
        case .getConfig(let window):
            guard protocolFeatures.contains(.config) else {
                throw .peerProtocol(.notNegotiated(request: "GET_CONFIG", feature: "the CONFIG protocol feature"))
            }
            guard UInt64(window.offset) + UInt64(window.size) <= UInt64(VhostUserConfigSpace.maximumSize) else {
                throw .peerProtocol(.malformedMessage(request: "GET_CONFIG", problem: "\(window.size) bytes at offset \(window.offset) reach beyond the \(VhostUserConfigSpace.maximumSize)-byte config space"))
            }
            netConfig.status = linkUp() ? VirtioNetConfig.linkUp : 0
            // Fields beyond the ones we serve read as zero: what they mean without their feature.
            var space = [UInt8](repeating: 0, count: Int(VhostUserConfigSpace.maximumSize))
            space.replaceSubrange(0..<VirtioNetConfig.byteCount, with: netConfig.bytes)
            let start = Int(window.offset)
            let answer = VhostUserConfigSpace(
                offset: window.offset, size: window.size, payload: Array(space[start..<(start + Int(window.size))]))
            try channel.reply(to: .getConfig, payload: answer.encoded)
        case .netSetMTU(let mtu):
            guard protocolFeatures.contains(.mtu) else {
                throw .peerProtocol(.notNegotiated(request: "NET_SET_MTU", feature: "the NET_MTU protocol feature"))
            }
            guard (UInt64(VirtioNetMTU.minimum)...UInt64(VirtioNetMTU.maximum)).contains(mtu) else {
                throw .peerProtocol(.malformedMessage(request: "NET_SET_MTU", problem: "\(mtu) is outside \(VirtioNetMTU.minimum)…\(VirtioNetMTU.maximum)"))
            }
            announcedMTU = Int(mtu)
            netConfig.mtu = UInt16(mtu)
            dataPath.mtu = Int(mtu)
        }
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndianU64(_ value: UInt64) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    mutating func appendLittleEndianU32(_ value: UInt32) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
