import VirtioCore

/// `struct vhost_vring_state`: a ring index and a number (size, base or enable flag).
public struct VringState: Equatable, Sendable {
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) {
        self.index = index
        self.num = num
    }
    static let byteCount = 8
}

/// `struct vhost_vring_addr`: where a ring's parts are, in the front-end's address space.
/// Note the wire order: descriptor table, used ring, available ring, log.
public struct VringAddress: Equatable, Sendable {
    public var index: UInt32
    /// Bit 0 (VHOST_VRING_F_LOG) asks for logging of used-ring writes.
    public var flags: UInt32
    public var descriptorTable: UInt64
    public var usedRing: UInt64
    public var availableRing: UInt64
    public var log: UInt64
    public init(index: UInt32, flags: UInt32 = 0, descriptorTable: UInt64, usedRing: UInt64, availableRing: UInt64, log: UInt64 = 0) {
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
public struct VringFile: Equatable, Sendable {
    public var index: UInt32
    public var hasDescriptor: Bool
    public init(index: UInt32, hasDescriptor: Bool) {
        self.index = index
        self.hasDescriptor = hasDescriptor
    }
    static let indexMask: UInt64 = 0xFF
    static let noDescriptorFlag: UInt64 = 0x100

    var encoded: UInt64 { UInt64(index) | (hasDescriptor ? 0 : Self.noDescriptorFlag) }

    init(decoding value: UInt64, request: VhostUserRequest) throws(VirtioError) {
        guard value & ~(Self.indexMask | Self.noDescriptorFlag) == 0 else {
            throw VirtioError(.protocolViolation, "\(request) payload 0x\(String(value, radix: 16)) has bits set beyond the index and the no-fd flag.")
        }
        index = UInt32(value & Self.indexMask)
        hasDescriptor = value & Self.noDescriptorFlag == 0
    }
}

/// One entry of SET_MEM_TABLE (`struct vhost_memory_region`).
public struct MemoryRegionDescriptor: Equatable, Sendable {
    /// Address the driver uses in descriptors ("guest physical").
    public var guestPhysicalAddress: UInt64
    public var size: UInt64
    /// Address the front-end uses for ring addresses (its virtual address).
    public var userAddress: UInt64
    /// Offset of the region inside the fd sent with it.
    public var mmapOffset: UInt64
    public init(guestPhysicalAddress: UInt64, size: UInt64, userAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userAddress = userAddress
        self.mmapOffset = mmapOffset
    }
    static let byteCount = 32
    /// VHOST_MEMORY_BASELINE_NREGIONS: the most regions one SET_MEM_TABLE may carry.
    public static let maximumCount = 8
}
