import CVirtioShim
import VhostUser
import VirtioCore

/// What the front-end told us about one virtqueue, and the running ring once it starts.
///
/// A ring starts when its kick fd arrives (SET_VRING_KICK) and its addresses translate;
/// it carries traffic while also enabled; GET_VRING_BASE stops it.
package final class BackendVring {
    let index: Int
    var size = 0
    var base: UInt16 = 0
    var address: VringAddress?
    var kick: EventNotifier?
    var call: EventNotifier?
    var enabled = false
    /// VIRTIO_RING_F_EVENT_IDX negotiated: the ring's notifications use the event indices.
    var usesEventIndex = false {
        didSet {
            ring?.usesEventIndex = usesEventIndex
            ring?.setNotificationsEnabled(false)
        }
    }
    /// VIRTIO_F_RING_PACKED negotiated: the ring starts in the packed format.
    var packedFormat = false
    /// The device half, present while the ring is started: one of the two formats.
    private(set) var split: SplitRingDevice?
    private(set) var packed: PackedRingDevice?
    /// The running ring, whichever its format (for the paths that are not per frame).
    var ring: (any DeviceRing)? {
        if let split { return split }
        return packed
    }
    /// Scratch space for one chain (as long as the queue), allocated when the ring starts.
    private(set) var segments: UnsafeMutablePointer<ChainSegment>?
    /// Our addresses of those segments, once translated (see ``HostChain``).
    private(set) var hosts: UnsafeMutablePointer<UnsafeMutableRawPointer>?
    /// Scratch space for the receive chains one frame is merged into (mergeable buffers): their
    /// heads and capacities, as many as the queue holds.
    private(set) var mergeHeads: UnsafeMutablePointer<UInt16>?
    private(set) var mergeCapacities: UnsafeMutablePointer<Int>?

    package init(index: Int) {
        self.index = index
    }

    deinit {
        segments?.deallocate()
        hosts?.deallocate()
        mergeHeads?.deallocate()
        mergeCapacities?.deallocate()
    }

    /// Sets what SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR and SET_VRING_ENABLE would, for
    /// a data path driven without a front-end (the fuzz harness). A method, not `package`
    /// stored properties: those would cost dynamic exclusivity checks on the hot path.
    package func prepare(size: Int, base: UInt16, address: VringAddress, enabled: Bool) {
        self.size = size
        self.base = base
        self.address = address
        self.enabled = enabled
    }

    /// True when frames may move on this ring.
    var isLive: Bool { enabled && (split != nil || packed != nil) }

    /// Starts the ring over `memory`, checking the size, the base and that each part lies,
    /// aligned, in the front-end's regions.
    package func start(memory: GuestMemoryMap) throws(VirtioError) {
        // Restarting a running ring (a new memory table or address): carry on from where it
        // stopped, not from the session's first base. Between bursts every chain taken has
        // been returned, so the position is all the state there is.
        if let ring { base = UInt16(truncatingIfNeeded: ring.vringBase) }
        guard let address else {
            throw .peerProtocol(.badRingSetup(ring: index, problem: "started before SET_VRING_ADDR"))
        }
        if packedFormat {
            guard PackedRingMemory.isValidSize(size) else {
                throw .peerProtocol(.badRingSetup(ring: index, problem: "started with size \(size); a packed ring holds 1…32768 (send SET_VRING_NUM first)"))
            }
            guard PackedRingDevice.isValidBase(base, size: size) else {
                throw .peerProtocol(.badRingSetup(ring: index, problem: "SET_VRING_BASE 0x\(String(base, radix: 16)) names slot \(base & 0x7FFF) of a ring of \(size)"))
            }
            // SET_VRING_ADDR's available and used fields carry the driver and device areas.
            let pointers = try translate([
                ("descriptor ring", address.descriptorTable, cvs_vring_desc_bytes(UInt32(size)), Int(CVS_PVIRTQ_DESC_ALIGN)),
                ("driver event area", address.availableRing, Int(CVS_PVIRTQ_EVENT_BYTES), Int(CVS_PVIRTQ_EVENT_ALIGN)),
                ("device event area", address.usedRing, Int(CVS_PVIRTQ_EVENT_BYTES), Int(CVS_PVIRTQ_EVENT_ALIGN)),
            ], memory: memory)
            let device = PackedRingDevice(
                memory: PackedRingMemory(size: size, descriptors: pointers[0], driverEvent: pointers[1], deviceEvent: pointers[2]),
                base: base)
            // Transmit rings (odd indices) are only read; see the property for the DPDK quirk.
            device.readsIndirectTablesAsReadOnly = index % 2 == 1
            install(device)
            packed = device
            split = nil
        } else {
            guard SplitRingMemory.isValidSize(size) else {
                throw .peerProtocol(.badRingSetup(ring: index, problem: "started with size \(size); a power of two up to 32768 is required (send SET_VRING_NUM first)"))
            }
            let pointers = try translate([
                ("descriptor table", address.descriptorTable, cvs_vring_desc_bytes(UInt32(size)), Int(CVS_VRING_DESC_ALIGN)),
                ("available ring", address.availableRing, cvs_vring_avail_bytes(UInt32(size)), Int(CVS_VRING_AVAIL_ALIGN)),
                ("used ring", address.usedRing, cvs_vring_used_bytes(UInt32(size)), Int(CVS_VRING_USED_ALIGN)),
            ], memory: memory)
            let device = SplitRingDevice(
                memory: SplitRingMemory(size: size, descriptors: pointers[0], avail: pointers[1], used: pointers[2]),
                baseIndex: base)
            install(device)
            split = device
            packed = nil
        }
        segments?.deallocate()
        segments = .allocate(capacity: size)
        hosts?.deallocate()
        hosts = .allocate(capacity: size)
        mergeHeads?.deallocate()
        mergeHeads = .allocate(capacity: size)
        mergeCapacities?.deallocate()
        mergeCapacities = .allocate(capacity: size)
    }

    /// Local pointers to ring parts, each checked for alignment and to lie in shared memory.
    private func translate(_ parts: [(String, UInt64, Int, Int)], memory: GuestMemoryMap) throws(VirtioError) -> [UnsafeMutableRawPointer] {
        var pointers: [UnsafeMutableRawPointer] = []
        for (name, userAddress, length, alignment) in parts {
            guard userAddress % UInt64(alignment) == 0 else {
                throw .peerProtocol(.badRingSetup(ring: index, problem: "its \(name) at 0x\(String(userAddress, radix: 16)) is not \(alignment)-byte aligned"))
            }
            guard let pointer = memory.translate(user: userAddress, length: UInt64(length)) else {
                throw .peerProtocol(.badRingSetup(ring: index, problem: "its \(name) at 0x\(String(userAddress, radix: 16)) (\(length) bytes) is not inside the shared memory"))
            }
            pointers.append(pointer)
        }
        return pointers
    }

    private func install(_ device: some DeviceRing) {
        device.usesEventIndex = usesEventIndex
        // We poll while traffic flows: tell the driver not to kick until we go idle.
        device.setNotificationsEnabled(false)
    }

    /// Stops the ring; returns where it stopped (the next available index to process).
    @discardableResult
    package func stop() -> UInt16 {
        if let ring { base = UInt16(truncatingIfNeeded: ring.vringBase) }
        split = nil
        packed = nil
        kick = nil
        return base
    }

    /// Forgets everything (RESET_OWNER, or a new connection).
    func reset() {
        _ = stop()
        size = 0
        base = 0
        address = nil
        call = nil
        enabled = false
        usesEventIndex = false
        packedFormat = false
    }
}
