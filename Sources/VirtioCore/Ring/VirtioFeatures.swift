/// Virtio feature bits (VIRTIO 1.1 §5.1.3 and §6) and the vhost-user bit that shares the space.
public struct VirtioFeatures: OptionSet, Sendable, Hashable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    init(bit: Int) { rawValue = 1 << UInt64(bit) }

    public static let netCsum = VirtioFeatures(bit: 0)
    public static let netGuestCsum = VirtioFeatures(bit: 1)
    public static let netMTU = VirtioFeatures(bit: 3)
    public static let netGuestTSO4 = VirtioFeatures(bit: 7)
    public static let netGuestTSO6 = VirtioFeatures(bit: 8)
    public static let netHostTSO4 = VirtioFeatures(bit: 11)
    public static let netHostTSO6 = VirtioFeatures(bit: 12)
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
        (.netGuestTSO4, "GUEST_TSO4"), (.netGuestTSO6, "GUEST_TSO6"), (.netHostTSO4, "HOST_TSO4"),
        (.netHostTSO6, "HOST_TSO6"),
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
@usableFromInline package enum VirtioNetHeader {
    /// Its size in bytes.
    @usableFromInline package static let size = 12
    /// The longest frame a chain may carry after the header: the largest segmentation-offload
    /// frame Linux builds (64 KiB) with room for link-layer headers. A longer chain is corrupt,
    /// and its length could not be reported in a used entry's 32 bits once summed.
    @usableFromInline package static let maximumFrameLength = 65_536 + 64
}

/// The offload fields of the virtio-net header (VIRTIO 1.1 §5.1.6): checksum and segmentation
/// requests on transmit, results on receive. The header's last field, `num_buffers`, is the
/// device's and not part of this.
public struct VirtioNetOffload: Sendable, Equatable {
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM (transmit, or receive with GUEST_CSUM): the checksum from
    /// `checksumStart` to the end goes at `checksumStart + checksumOffset`; the field holds the
    /// pseudo-header sum.
    public static let needsChecksum: UInt8 = 1
    /// VIRTIO_NET_HDR_F_DATA_VALID (receive): the checksum was verified.
    public static let dataValid: UInt8 = 2
    /// `gsoType` values.
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4

    public var flags: UInt8
    public var gsoType: UInt8
    /// Bytes of Ethernet + IP + TCP headers (segmentation).
    public var headerLength: UInt16
    /// Payload bytes per segment (segmentation).
    public var gsoSize: UInt16
    public var checksumStart: UInt16
    public var checksumOffset: UInt16

    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// No offload requested or reported.
    public var isEmpty: Bool { flags == 0 && gsoType == 0 }

    /// Reads the fields from a header at `header` (little-endian, unaligned).
    @usableFromInline package init(header: UnsafeRawPointer) {
        flags = header.load(fromByteOffset: 0, as: UInt8.self)
        gsoType = header.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: header.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    /// Writes the fields into a header at `header` (the first 10 bytes).
    @usableFromInline package func write(to header: UnsafeMutableRawPointer) {
        header.storeBytes(of: flags, toByteOffset: 0, as: UInt8.self)
        header.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        header.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        header.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        header.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        header.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }

    /// The features a driver must have negotiated to send this (CSUM for a checksum request,
    /// HOST_TSO4/6 for TCP segmentation; UDP segmentation is not offered).
    public var featuresNeededToSend: VirtioFeatures? {
        var needed: VirtioFeatures = []
        if flags & Self.needsChecksum != 0 { needed.insert(.netCsum) }
        if flags & ~Self.needsChecksum != 0 { return nil }
        switch gsoType {
        case Self.gsoNone: break
        case Self.gsoTCPv4: needed.formUnion([.netHostTSO4, .netCsum])
        case Self.gsoTCPv6: needed.formUnion([.netHostTSO6, .netCsum])
        default: return nil
        }
        return needed
    }

    /// The features a driver must have negotiated to receive this as is.
    public var featuresNeededToReceive: VirtioFeatures {
        var needed: VirtioFeatures = []
        if flags & Self.needsChecksum != 0 { needed.insert(.netGuestCsum) }
        if gsoType == Self.gsoTCPv4 { needed.insert(.netGuestTSO4) }
        if gsoType == Self.gsoTCPv6 { needed.insert(.netGuestTSO6) }
        return needed
    }
}

/// Virtio device status bits (VIRTIO 1.1 §2.1), carried by SET_STATUS.
@usableFromInline package struct VirtioDeviceStatus: OptionSet, Sendable, Hashable {
    @usableFromInline package let rawValue: UInt8
    @usableFromInline package init(rawValue: UInt8) { self.rawValue = rawValue }
    @usableFromInline package static let acknowledge = VirtioDeviceStatus(rawValue: 1)
    @usableFromInline package static let driver = VirtioDeviceStatus(rawValue: 2)
    @usableFromInline package static let driverOK = VirtioDeviceStatus(rawValue: 4)
    @usableFromInline package static let featuresOK = VirtioDeviceStatus(rawValue: 8)
    @usableFromInline package static let needsReset = VirtioDeviceStatus(rawValue: 64)
    @usableFromInline package static let failed = VirtioDeviceStatus(rawValue: 128)
}
