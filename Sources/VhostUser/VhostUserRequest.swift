import VirtioCore

/// A vhost-user request code (QEMU docs/interop/vhost-user.rst, "Front-end message types").
/// A struct rather than an enum so a code we do not know can still be carried and reported.
@usableFromInline package struct VhostUserRequest: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    @usableFromInline package let rawValue: UInt32
    @usableFromInline package init(rawValue: UInt32) { self.rawValue = rawValue }

    @usableFromInline package static let getFeatures = VhostUserRequest(rawValue: 1)
    @usableFromInline package static let setFeatures = VhostUserRequest(rawValue: 2)
    @usableFromInline package static let setOwner = VhostUserRequest(rawValue: 3)
    @usableFromInline package static let resetOwner = VhostUserRequest(rawValue: 4)
    @usableFromInline package static let setMemTable = VhostUserRequest(rawValue: 5)
    @usableFromInline package static let setLogBase = VhostUserRequest(rawValue: 6)
    @usableFromInline package static let setLogFD = VhostUserRequest(rawValue: 7)
    @usableFromInline package static let setVringNum = VhostUserRequest(rawValue: 8)
    @usableFromInline package static let setVringAddr = VhostUserRequest(rawValue: 9)
    @usableFromInline package static let setVringBase = VhostUserRequest(rawValue: 10)
    @usableFromInline package static let getVringBase = VhostUserRequest(rawValue: 11)
    @usableFromInline package static let setVringKick = VhostUserRequest(rawValue: 12)
    @usableFromInline package static let setVringCall = VhostUserRequest(rawValue: 13)
    @usableFromInline package static let setVringErr = VhostUserRequest(rawValue: 14)
    @usableFromInline package static let getProtocolFeatures = VhostUserRequest(rawValue: 15)
    @usableFromInline package static let setProtocolFeatures = VhostUserRequest(rawValue: 16)
    @usableFromInline package static let getQueueNum = VhostUserRequest(rawValue: 17)
    @usableFromInline package static let setVringEnable = VhostUserRequest(rawValue: 18)
    @usableFromInline package static let sendRARP = VhostUserRequest(rawValue: 19)
    @usableFromInline package static let netSetMTU = VhostUserRequest(rawValue: 20)
    @usableFromInline package static let setBackendRequestFD = VhostUserRequest(rawValue: 21)
    @usableFromInline package static let iotlbMessage = VhostUserRequest(rawValue: 22)
    @usableFromInline package static let getConfig = VhostUserRequest(rawValue: 24)
    @usableFromInline package static let setConfig = VhostUserRequest(rawValue: 25)
    @usableFromInline package static let getInflightFD = VhostUserRequest(rawValue: 31)
    @usableFromInline package static let setInflightFD = VhostUserRequest(rawValue: 32)
    @usableFromInline package static let getMaxMemSlots = VhostUserRequest(rawValue: 36)
    @usableFromInline package static let addMemReg = VhostUserRequest(rawValue: 37)
    @usableFromInline package static let remMemReg = VhostUserRequest(rawValue: 38)
    @usableFromInline package static let setStatus = VhostUserRequest(rawValue: 39)
    @usableFromInline package static let getStatus = VhostUserRequest(rawValue: 40)

    private static let names: [UInt32: String] = [
        1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 4: "RESET_OWNER", 5: "SET_MEM_TABLE",
        6: "SET_LOG_BASE", 7: "SET_LOG_FD", 8: "SET_VRING_NUM", 9: "SET_VRING_ADDR",
        10: "SET_VRING_BASE", 11: "GET_VRING_BASE", 12: "SET_VRING_KICK", 13: "SET_VRING_CALL",
        14: "SET_VRING_ERR", 15: "GET_PROTOCOL_FEATURES", 16: "SET_PROTOCOL_FEATURES",
        17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE", 19: "SEND_RARP", 20: "NET_SET_MTU",
        21: "SET_BACKEND_REQ_FD", 22: "IOTLB_MSG", 24: "GET_CONFIG", 25: "SET_CONFIG",
        31: "GET_INFLIGHT_FD", 32: "SET_INFLIGHT_FD", 36: "GET_MAX_MEM_SLOTS", 37: "ADD_MEM_REG",
        38: "REM_MEM_REG", 39: "SET_STATUS", 40: "GET_STATUS",
    ]

    /// The protocol's name for the code, or "request N".
    @usableFromInline package var description: String { Self.names[rawValue] ?? "request \(rawValue)" }
}

/// VHOST_USER_PROTOCOL_F_* bits, negotiated with GET/SET_PROTOCOL_FEATURES.
public struct VhostUserProtocolFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public static let multiqueue = VhostUserProtocolFeatures(rawValue: 1 << 0)
    public static let logSharedMemory = VhostUserProtocolFeatures(rawValue: 1 << 1)
    public static let rarp = VhostUserProtocolFeatures(rawValue: 1 << 2)
    public static let replyAck = VhostUserProtocolFeatures(rawValue: 1 << 3)
    public static let mtu = VhostUserProtocolFeatures(rawValue: 1 << 4)
    public static let backendRequests = VhostUserProtocolFeatures(rawValue: 1 << 5)
    public static let config = VhostUserProtocolFeatures(rawValue: 1 << 9)
    public static let hostNotifier = VhostUserProtocolFeatures(rawValue: 1 << 11)
    public static let inflightSharedMemory = VhostUserProtocolFeatures(rawValue: 1 << 12)
    public static let configureMemorySlots = VhostUserProtocolFeatures(rawValue: 1 << 15)
    public static let status = VhostUserProtocolFeatures(rawValue: 1 << 16)

    /// What this package implements, on either side.
    public static let implemented: VhostUserProtocolFeatures = [.multiqueue, .replyAck, .mtu, .config, .status]

    public var description: String { "0x" + String(rawValue, radix: 16) }
}
