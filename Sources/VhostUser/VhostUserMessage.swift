import VirtioCore

/// A front-end → back-end request, typed. Each case knows its wire payload and how many file
/// descriptors travel with it; ``decode(header:payload:descriptorCount:)`` checks both.
@usableFromInline package enum VhostUserMessage: Equatable, Sendable {
    case getFeatures
    case setFeatures(VirtioFeatures)
    case setOwner
    case resetOwner
    case getProtocolFeatures
    case setProtocolFeatures(VhostUserProtocolFeatures)
    /// Regions; one fd per region travels with the message.
    case setMemTable([MemoryRegionDescriptor])
    case setVringNum(VringState)
    case setVringAddr(VringAddress)
    case setVringBase(VringState)
    case getVringBase(VringState)
    /// One fd travels with it unless `hasDescriptor` is false.
    case setVringKick(VringFile)
    case setVringCall(VringFile)
    case setVringErr(VringFile)
    case getQueueNum
    case setVringEnable(VringState)
    case setStatus(UInt8)
    case getStatus
    /// Reads a window of the device configuration space (needs the CONFIG protocol feature).
    case getConfig(VhostUserConfigSpace)
    /// Tells the back-end the MTU the front-end uses (needs the NET_MTU protocol feature).
    case netSetMTU(UInt64)

    /// The request code.
    @usableFromInline package var request: VhostUserRequest {
        switch self {
        case .getFeatures: return .getFeatures
        case .setFeatures: return .setFeatures
        case .setOwner: return .setOwner
        case .resetOwner: return .resetOwner
        case .getProtocolFeatures: return .getProtocolFeatures
        case .setProtocolFeatures: return .setProtocolFeatures
        case .setMemTable: return .setMemTable
        case .setVringNum: return .setVringNum
        case .setVringAddr: return .setVringAddr
        case .setVringBase: return .setVringBase
        case .getVringBase: return .getVringBase
        case .setVringKick: return .setVringKick
        case .setVringCall: return .setVringCall
        case .setVringErr: return .setVringErr
        case .getQueueNum: return .getQueueNum
        case .setVringEnable: return .setVringEnable
        case .setStatus: return .setStatus
        case .getStatus: return .getStatus
        case .getConfig: return .getConfig
        case .netSetMTU: return .netSetMTU
        }
    }

    /// True when the protocol defines a reply of its own (so REPLY_ACK does not apply).
    @usableFromInline package var hasReply: Bool {
        switch self {
        case .getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getStatus, .getConfig: return true
        default: return false
        }
    }

    /// How many fds must travel with this message.
    @usableFromInline package var descriptorCount: Int {
        switch self {
        case .setMemTable(let regions): return regions.count
        case .setVringKick(let file), .setVringCall(let file), .setVringErr(let file):
            return file.hasDescriptor ? 1 : 0
        default: return 0
        }
    }

    /// The payload bytes.
    @usableFromInline package func encodePayload() -> [UInt8] {
        var bytes: [UInt8] = []
        switch self {
        case .getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum, .getStatus:
            break
        case .setFeatures(let features): bytes.appendLittleEndian(features.rawValue)
        case .setProtocolFeatures(let features): bytes.appendLittleEndian(features.rawValue)
        case .setStatus(let status): bytes.appendLittleEndian(UInt64(status))
        case .netSetMTU(let mtu): bytes.appendLittleEndian(mtu)
        case .getConfig(let space): bytes = space.encoded
        case .setMemTable(let regions):
            bytes.appendLittleEndian(UInt32(regions.count))
            bytes.appendLittleEndian(UInt32(0))
            for region in regions {
                bytes.appendLittleEndian(region.guestPhysicalAddress)
                bytes.appendLittleEndian(region.size)
                bytes.appendLittleEndian(region.userAddress)
                bytes.appendLittleEndian(region.mmapOffset)
            }
        case .setVringNum(let state), .setVringBase(let state), .getVringBase(let state), .setVringEnable(let state):
            bytes.appendLittleEndian(state.index)
            bytes.appendLittleEndian(state.num)
        case .setVringAddr(let address):
            bytes.appendLittleEndian(address.index)
            bytes.appendLittleEndian(address.flags)
            bytes.appendLittleEndian(address.descriptorTable)
            bytes.appendLittleEndian(address.usedRing)
            bytes.appendLittleEndian(address.availableRing)
            bytes.appendLittleEndian(address.log)
        case .setVringKick(let file), .setVringCall(let file), .setVringErr(let file):
            bytes.appendLittleEndian(file.encoded)
        }
        return bytes
    }

    /// Decodes and validates a request: the payload size must be exactly the message's, and the
    /// number of fds that came with it exactly what the message calls for. Unknown requests
    /// are refused with `.unsupported`.
    @usableFromInline package static func decode(header: VhostUserHeader, payload: [UInt8], descriptorCount: Int) throws(VirtioError) -> VhostUserMessage {
        let request = header.request
        if header.isReply {
            throw .peerProtocol(.malformedMessage(request: "\(request)", problem: "the reply flag is set on a request"))
        }
        func size(_ expected: Int) throws(VirtioError) {
            guard payload.count == expected else {
                throw .peerProtocol(.malformedMessage(request: "\(request)", problem: "a \(expected)-byte payload is needed; \(payload.count) came"))
            }
        }
        var reader = WireReader(payload)
        let message: VhostUserMessage
        switch request {
        case .getFeatures: try size(0); message = .getFeatures
        case .setOwner: try size(0); message = .setOwner
        case .resetOwner: try size(0); message = .resetOwner
        case .getProtocolFeatures: try size(0); message = .getProtocolFeatures
        case .getQueueNum: try size(0); message = .getQueueNum
        case .getStatus: try size(0); message = .getStatus
        case .setFeatures: try size(8); message = .setFeatures(VirtioFeatures(rawValue: reader.u64()))
        case .setProtocolFeatures:
            try size(8); message = .setProtocolFeatures(VhostUserProtocolFeatures(rawValue: reader.u64()))
        case .setStatus:
            try size(8)
            let value = reader.u64()
            guard value <= 0xFF else {
                throw .peerProtocol(.malformedMessage(request: "SET_STATUS", problem: "0x\(String(value, radix: 16)) does not fit the 8-bit status"))
            }
            message = .setStatus(UInt8(value))
        case .netSetMTU:
            try size(8)
            message = .netSetMTU(reader.u64())
        case .getConfig:
            message = .getConfig(try VhostUserConfigSpace(decoding: payload, request: request))
        case .setVringNum, .setVringBase, .getVringBase, .setVringEnable:
            try size(VringState.byteCount)
            let state = VringState(index: reader.u32(), num: reader.u32())
            switch request {
            case .setVringNum: message = .setVringNum(state)
            case .setVringBase: message = .setVringBase(state)
            case .getVringBase: message = .getVringBase(state)
            default: message = .setVringEnable(state)
            }
        case .setVringAddr:
            try size(VringAddress.byteCount)
            message = .setVringAddr(VringAddress(
                index: reader.u32(), flags: reader.u32(), descriptorTable: reader.u64(),
                usedRing: reader.u64(), availableRing: reader.u64(), log: reader.u64()))
        case .setVringKick, .setVringCall, .setVringErr:
            try size(8)
            let file = try VringFile(decoding: reader.u64(), request: request)
            switch request {
            case .setVringKick: message = .setVringKick(file)
            case .setVringCall: message = .setVringCall(file)
            default: message = .setVringErr(file)
            }
        case .setMemTable:
            guard payload.count >= 8 else {
                throw .peerProtocol(.malformedMessage(request: "SET_MEM_TABLE", problem: "a payload of \(payload.count) bytes is shorter than its 8-byte count field"))
            }
            let count = Int(reader.u32())
            _ = reader.u32()
            guard count >= 1, count <= MemoryRegionDescriptor.maximumCount else {
                throw .peerProtocol(.malformedMessage(request: "SET_MEM_TABLE", problem: "\(count) regions named; 1…\(MemoryRegionDescriptor.maximumCount) are allowed"))
            }
            // Front-ends send either exactly `count` entries or the full fixed-size array.
            let exact = 8 + count * MemoryRegionDescriptor.byteCount
            let full = 8 + MemoryRegionDescriptor.maximumCount * MemoryRegionDescriptor.byteCount
            guard payload.count == exact || payload.count == full else {
                throw .peerProtocol(.malformedMessage(request: "SET_MEM_TABLE", problem: "\(count) regions need \(exact) (or \(full)) payload bytes; \(payload.count) came"))
            }
            var regions: [MemoryRegionDescriptor] = []
            for _ in 0..<count {
                regions.append(MemoryRegionDescriptor(
                    guestPhysicalAddress: reader.u64(), size: reader.u64(),
                    userAddress: reader.u64(), mmapOffset: reader.u64()))
            }
            message = .setMemTable(regions)
        default:
            throw .peerProtocol(.unsupportedRequest("\(request)"))
        }
        guard descriptorCount == message.descriptorCount else {
            throw .peerProtocol(.badFileDescriptors(request: "\(request)", problem: "\(message.descriptorCount) file descriptor(s) are needed; \(descriptorCount) arrived"))
        }
        return message
    }
}
