/// Virtio feature bits (VIRTIO 1.1 §5.1.3 and §6) and the vhost-user bit that shares the space.
public struct VirtioFeatures: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    init(bit: Int) { rawValue = 1 << UInt64(bit) }

    public static let netCsum = VirtioFeatures(bit: 0)
    public static let netGuestCsum = VirtioFeatures(bit: 1)
    public static let netMTU = VirtioFeatures(bit: 3)
    public static let netMAC = VirtioFeatures(bit: 5)
    public static let netMergeableRxBuffers = VirtioFeatures(bit: 15)
    public static let netStatus = VirtioFeatures(bit: 16)
    public static let netControlQueue = VirtioFeatures(bit: 17)
    public static let netMultiqueue = VirtioFeatures(bit: 22)
    public static let ringIndirectDescriptors = VirtioFeatures(bit: 28)
    public static let ringEventIndex = VirtioFeatures(bit: 29)
    /// VHOST_USER_F_PROTOCOL_FEATURES: the backend speaks GET/SET_PROTOCOL_FEATURES.
    public static let vhostUserProtocolFeatures = VirtioFeatures(bit: 30)
    public static let version1 = VirtioFeatures(bit: 32)
    public static let accessPlatform = VirtioFeatures(bit: 33)
    public static let ringPacked = VirtioFeatures(bit: 34)
    public static let inOrder = VirtioFeatures(bit: 35)

    private static let names: [(VirtioFeatures, String)] = [
        (.netCsum, "CSUM"), (.netGuestCsum, "GUEST_CSUM"), (.netMTU, "MTU"), (.netMAC, "MAC"),
        (.netMergeableRxBuffers, "MRG_RXBUF"), (.netStatus, "STATUS"), (.netControlQueue, "CTRL_VQ"),
        (.netMultiqueue, "MQ"), (.ringIndirectDescriptors, "INDIRECT_DESC"),
        (.ringEventIndex, "EVENT_IDX"), (.vhostUserProtocolFeatures, "PROTOCOL_FEATURES"),
        (.version1, "VERSION_1"), (.accessPlatform, "ACCESS_PLATFORM"), (.ringPacked, "RING_PACKED"),
        (.inOrder, "IN_ORDER"),
    ]

    /// "0x… (NAME|NAME|bit N)".
    public var description: String {
        var parts: [String] = []
        var rest = rawValue
        for (feature, name) in Self.names where contains(feature) {
            parts.append(name)
            rest &= ~feature.rawValue
        }
        for bit in 0..<64 where rest & (1 << UInt64(bit)) != 0 { parts.append("bit \(bit)") }
        return "0x" + String(rawValue, radix: 16) + " (" + parts.joined(separator: "|") + ")"
    }
}

/// The 12-byte virtio-net header that precedes every frame once VERSION_1 is negotiated
/// (VIRTIO 1.1 §5.1.6: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset,
/// num_buffers).
public enum VirtioNetHeader {
    /// Its size in bytes.
    public static let size = 12
}

/// Virtio device status bits (VIRTIO 1.1 §2.1), carried by SET_STATUS.
public struct VirtioDeviceStatus: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let acknowledge = VirtioDeviceStatus(rawValue: 1)
    public static let driver = VirtioDeviceStatus(rawValue: 2)
    public static let driverOK = VirtioDeviceStatus(rawValue: 4)
    public static let featuresOK = VirtioDeviceStatus(rawValue: 8)
    public static let needsReset = VirtioDeviceStatus(rawValue: 64)
    public static let failed = VirtioDeviceStatus(rawValue: 128)
}
