import VirtioCore

/// `struct vhost_vring_state`: a ring index and a number (size, base or enable flag).
@usableFromInline package struct VringState: Equatable, Sendable {
    @usableFromInline package var index: UInt32
    @usableFromInline package var num: UInt32
    @usableFromInline package init(index: UInt32, num: UInt32) {
        self.index = index
        self.num = num
    }
    static let byteCount = 8
}

/// `struct vhost_vring_addr`: where a ring's parts are, in the front-end's address space.
/// Note the wire order: descriptor table, used ring, available ring, log.
@usableFromInline package struct VringAddress: Equatable, Sendable {
    @usableFromInline package var index: UInt32
    /// Bit 0 (VHOST_VRING_F_LOG) asks for logging of used-ring writes.
    @usableFromInline package var flags: UInt32
    @usableFromInline package var descriptorTable: UInt64
    @usableFromInline package var usedRing: UInt64
    @usableFromInline package var availableRing: UInt64
    @usableFromInline package var log: UInt64
    @usableFromInline package init(index: UInt32, flags: UInt32 = 0, descriptorTable: UInt64, usedRing: UInt64, availableRing: UInt64, log: UInt64 = 0) {
        self.index = index
        self.flags = flags
        self.descriptorTable = descriptorTable
        self.usedRing = usedRing
        self.availableRing = availableRing
        self.log = log
    }
    static let byteCount = 40
}

/// The u64 of SET_VRING_KICK / CALL / ERR: ring index in bits 0-7, bit 8 set when no fd is
/// attached (the peer must then poll).
@usableFromInline package struct VringFile: Equatable, Sendable {
    @usableFromInline package var index: UInt32
    @usableFromInline package var hasDescriptor: Bool
    @usableFromInline package init(index: UInt32, hasDescriptor: Bool) {
        self.index = index
        self.hasDescriptor = hasDescriptor
    }
    static let indexMask: UInt64 = 0xFF
    static let noDescriptorFlag: UInt64 = 0x100

    var encoded: UInt64 { UInt64(index) | (hasDescriptor ? 0 : Self.noDescriptorFlag) }

    init(decoding value: UInt64, request: VhostUserRequest) throws(VirtioError) {
        guard value & ~(Self.indexMask | Self.noDescriptorFlag) == 0 else {
            throw .peerProtocol(.malformedMessage(request: "\(request)", problem: "payload 0x\(String(value, radix: 16)) has bits set beyond the index and the no-fd flag"))
        }
        index = UInt32(value & Self.indexMask)
        hasDescriptor = value & Self.noDescriptorFlag == 0
    }
}

/// The payload of GET_CONFIG / SET_CONFIG (`struct vhost_user_config`): a window of the device
/// configuration space. A GET_CONFIG request carries `size` zero bytes; the reply carries the
/// same header and the bytes.
@usableFromInline package struct VhostUserConfigSpace: Equatable, Sendable {
    @usableFromInline package var offset: UInt32
    @usableFromInline package var size: UInt32
    /// Bit 0: VHOST_SET_CONFIG_TYPE_MIGRATION (SET_CONFIG only).
    @usableFromInline package var flags: UInt32
    @usableFromInline package var payload: [UInt8]
    @usableFromInline package init(offset: UInt32, size: UInt32, flags: UInt32 = 0, payload: [UInt8]? = nil) {
        self.offset = offset
        self.size = size
        self.flags = flags
        self.payload = payload ?? [UInt8](repeating: 0, count: Int(min(size, Self.maximumSize)))
    }
    static let headerByteCount = 12
    /// VHOST_USER_MAX_CONFIG_SIZE.
    @usableFromInline package static let maximumSize: UInt32 = 256

    /// The wire bytes: header, then the payload.
    @usableFromInline package var encoded: [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(offset)
        bytes.appendLittleEndian(size)
        bytes.appendLittleEndian(flags)
        return bytes + payload
    }

    /// Decodes and checks: size at most 256, and exactly `size` payload bytes.
    init(decoding bytes: [UInt8], request: VhostUserRequest) throws(VirtioError) {
        guard bytes.count >= Self.headerByteCount else {
            throw .peerProtocol(.malformedMessage(request: "\(request)", problem: "a payload of \(bytes.count) bytes is shorter than its 12-byte header"))
        }
        var reader = WireReader(bytes)
        offset = reader.u32()
        size = reader.u32()
        flags = reader.u32()
        guard size <= Self.maximumSize else {
            throw .peerProtocol(.malformedMessage(request: "\(request)", problem: "\(size) bytes of config space asked for; at most \(Self.maximumSize) are allowed"))
        }
        guard bytes.count == Self.headerByteCount + Int(size) else {
            throw .peerProtocol(.malformedMessage(request: "\(request)", problem: "\(size) bytes need \(Self.headerByteCount + Int(size)) payload bytes; \(bytes.count) came"))
        }
        payload = Array(bytes[Self.headerByteCount...])
    }
}

/// One entry of SET_MEM_TABLE (`struct vhost_memory_region`).
@usableFromInline package struct MemoryRegionDescriptor: Equatable, Sendable {
    /// Address the driver uses in descriptors ("guest physical").
    @usableFromInline package var guestPhysicalAddress: UInt64
    @usableFromInline package var size: UInt64
    /// Address the front-end uses for ring addresses (its virtual address).
    @usableFromInline package var userAddress: UInt64
    /// Offset of the region inside the fd sent with it.
    @usableFromInline package var mmapOffset: UInt64
    @usableFromInline package init(guestPhysicalAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }
    static let byteCount = 32
    /// VHOST_MEMORY_BASELINE_NREGIONS: the most regions one SET_MEM_TABLE may carry.
    @usableFromInline package static let maximumCount = 8
}
