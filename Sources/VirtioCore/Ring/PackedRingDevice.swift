import CVirtioShim

/// The device half of a packed virtqueue (VIRTIO 1.1 §2.8): finds the chains the driver made
/// available, returns them used in the same slots.
///
/// A chain's token is its first slot. Looking for chains (``availableCount()``) walks forward
/// from where the last look stopped, so each descriptor's flags are read once; what it finds
/// (first slot, length, buffer id) is kept in arrays sized to the ring, allocated once. Used
/// descriptors are written as chains are returned and made visible together by
/// ``publishUsed()``: the first one's flags are stored last, with release, so the driver sees
/// the whole batch or none of it.
///
/// Everything read from the ring is checked: a chain may not be longer than the slots the
/// driver can have filled, an indirect descriptor must stand alone and name a table inside the
/// shared memory. A violation stops the ring. One thread owns a ring.
@usableFromInline package final class PackedRingDevice: DeviceRing {
    /// The shared ring memory.
    @usableFromInline package let memory: PackedRingMemory
    @usableFromInline package let size: Int
    @exclusivity(unchecked) @usableFromInline package var usesEventIndex = false
    /// Treat every entry of an indirect table as device-readable. For transmit queues, which
    /// the device only reads: DPDK's virtio driver (22.11 and later) leaves VIRTQ_DESC_F_WRITE
    /// set on the virtio-net header entry of its packed transmit tables, and its own vhost
    /// ignores the flag there.
    @exclusivity(unchecked) @usableFromInline package var readsIndirectTablesAsReadOnly = false

    /// Where the next chain to take starts.
    @exclusivity(unchecked) @usableFromInline var nextAvail: PackedRingPosition
    /// Where the next look for chains starts (past every chain found so far).
    @exclusivity(unchecked) @usableFromInline var scan: PackedRingPosition
    /// Where the next used descriptor goes.
    @exclusivity(unchecked) @usableFromInline var nextUsed: PackedRingPosition
    /// Slots from `nextUsed` to `scan`: taken or found, not yet returned. Never above `size`.
    @exclusivity(unchecked) @usableFromInline var outstanding = 0
    /// Chains found and not taken: first slots, in ring order (a circular queue).
    @usableFromInline let found: UnsafeMutablePointer<UInt16>
    @exclusivity(unchecked) @usableFromInline var foundFirst = 0
    @exclusivity(unchecked) @usableFromInline var foundCount = 0
    /// Per first slot: the chain's length in slots and its buffer id.
    @usableFromInline let chainLength: UnsafeMutablePointer<UInt16>
    @usableFromInline let chainID: UnsafeMutablePointer<UInt16>
    /// Used descriptors written and not yet published: their slots and flags, in order.
    @usableFromInline let pendingSlots: UnsafeMutablePointer<UInt16>
    @usableFromInline let pendingFlags: UnsafeMutablePointer<UInt16>
    @exclusivity(unchecked) @usableFromInline var pendingCount = 0
    // Last: rarely read, so it stays off the cache lines of the fields the data path uses.
    /// Set when the driver broke the protocol; the ring is unusable from then on.
    @exclusivity(unchecked) @usableFromInline package private(set) var violation: RingViolation?

    /// Starts a device view at `base` (SET_VRING_BASE: slot in bits 0–14, wrap counter in bit
    /// 15; the spec's start is 0x8000). The caller checked the slot is inside the ring.
    @usableFromInline package init(memory: PackedRingMemory, base: UInt16 = 0x8000) {
        self.memory = memory
        size = memory.size
        let start = PackedRingPosition(encoded: base)
        nextAvail = start
        scan = start
        nextUsed = start
        found = .allocate(capacity: memory.size)
        chainLength = .allocate(capacity: memory.size)
        chainID = .allocate(capacity: memory.size)
        pendingSlots = .allocate(capacity: memory.size)
        pendingFlags = .allocate(capacity: memory.size)
    }

    deinit {
        found.deallocate()
        chainLength.deallocate()
        chainID.deallocate()
        pendingSlots.deallocate()
        pendingFlags.deallocate()
    }

    /// True when `base` (a SET_VRING_BASE value) names a slot of a ring of `size`.
    @usableFromInline package static func isValidBase(_ base: UInt16, size: Int) -> Bool {
        Int(base & 0x7FFF) < size
    }

    @usableFromInline package var vringBase: UInt32 { UInt32(nextAvail.encoded) }

    @usableFromInline package func setNotificationsEnabled(_ enabled: Bool) {
        let flags = enabled ? CVS_RING_EVENT_FLAGS_ENABLE : CVS_RING_EVENT_FLAGS_DISABLE
        cvs_store_relaxed_u16(cvs_pevent_flags(memory.deviceEvent), UInt16(flags))
        cvs_fence_seq_cst()
    }

    @inlinable
    package func availableCount() -> Int {
        if violation != nil { return 0 }
        while outstanding < size {
            // Acquire: the driver makes a chain's first descriptor available last (§2.8.6), so
            // once its flags say so the rest of the chain is readable.
            let first = cvs_load_acquire_u16(cvs_pdesc_flags(memory.descriptors, UInt32(scan.slot)))
            guard scan.isAvailable(first) else { break }
            var position = scan
            var flags = first
            var length = 1
            while flags & UInt16(CVS_VRING_DESC_F_NEXT) != 0 {
                guard flags & UInt16(CVS_VRING_DESC_F_INDIRECT) == 0 else {
                    markViolation(.indirectInsideChain(index: Int(position.slot)))
                    return 0
                }
                guard outstanding &+ length < size else {
                    markViolation(.chainPastAvailable(slot: Int(scan.slot), limit: size - outstanding))
                    return 0
                }
                position = position.advanced(by: 1, size: size)
                flags = cvs_load_relaxed_u16(cvs_pdesc_flags(memory.descriptors, UInt32(position.slot)))
                guard position.isAvailable(flags) else {
                    markViolation(.chainContinuesIntoUnavailable(slot: Int(position.slot)))
                    return 0
                }
                length &+= 1
            }
            // The buffer id travels in the chain's last descriptor (§2.8.6).
            chainLength[scan.slot] = UInt16(truncatingIfNeeded: length)
            chainID[scan.slot] = memory.descriptors[position.slot].id
            found[wrapped(foundFirst &+ foundCount)] = UInt16(truncatingIfNeeded: scan.slot)
            foundCount &+= 1
            outstanding &+= length
            scan = position.advanced(by: 1, size: size)
        }
        return foundCount
    }

    @inlinable
    package func peekAvailable(ahead: Int) -> UInt16? {
        found[wrapped(foundFirst &+ ahead)]
    }

    /// `index` (less than twice the size) brought into the ring: no division on the hot path.
    @inlinable @inline(__always)
    func wrapped(_ index: Int) -> Int {
        index >= size ? index &- size : index
    }

    @inlinable
    package func skipAvailable(_ count: Int) {
        for _ in 0..<count {
            // Chains lie back to back, so the next one to take starts where this one does.
            nextAvail = nextAvail.advanced(by: Int(chainLength[Int(found[foundFirst])]), size: size)
            foundFirst = foundFirst &+ 1 == size ? 0 : foundFirst &+ 1
        }
        foundCount &-= count
    }

    /// Reads the chain starting at slot `head` (see ``DeviceRing/readChain(head:into:capacity:allowsIndirect:_:)``).
    @inlinable
    package func readChain(
        head: UInt16, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int,
        allowsIndirect: Bool, _ indirect: (UInt64, Int) -> UnsafeMutableRawPointer?
    ) -> Int? {
        let length = Int(chainLength[Int(head)])
        var slot = Int(head)
        var count = 0
        while count < length {
            // One copy of the descriptor: every check and use refers to it, never to shared
            // memory again (the driver may be changing it).
            let descriptor = memory.descriptors[slot]
            if descriptor.flags & UInt16(CVS_VRING_DESC_F_INDIRECT) != 0 {
                guard allowsIndirect else {
                    markViolation(.indirectNotNegotiated(index: Int(slot)))
                    return nil
                }
                return readIndirect(descriptor, slot: slot, into: segments, capacity: capacity, indirect)
            }
            guard count < capacity else {
                markViolation(.chainTooLong(head: Int(head), limit: capacity))
                return nil
            }
            segments[count] = ChainSegment(
                address: descriptor.addr, length: descriptor.len,
                deviceWritable: descriptor.flags & UInt16(CVS_VRING_DESC_F_WRITE) != 0)
            count &+= 1
            slot = slot &+ 1 == size ? 0 : slot &+ 1
        }
        return count
    }

    /// Reads an indirect table: consecutive descriptors, as many as its length holds (§2.8.7).
    @usableFromInline
    func readIndirect(
        _ table: cvs_pvirtq_desc, slot: Int, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int,
        _ indirect: (UInt64, Int) -> UnsafeMutableRawPointer?
    ) -> Int? {
        let entrySize = MemoryLayout<cvs_pvirtq_desc>.stride
        let entries = Int(table.len) / entrySize
        guard Int(table.len) % entrySize == 0, entries >= 1, entries <= size, entries <= capacity else {
            markViolation(.indirectTableLength(head: Int(slot), bytes: Int(table.len), maximumEntries: min(size, capacity)))
            return nil
        }
        guard let base = indirect(table.addr, Int(table.len)) else {
            markViolation(.indirectTableOutsideMemory(address: table.addr, bytes: Int(table.len)))
            return nil
        }
        for index in 0..<entries {
            // Only WRITE means anything inside a table; the other flags are ignored (§2.8.7).
            let descriptor = base.loadUnaligned(fromByteOffset: index &* entrySize, as: cvs_pvirtq_desc.self)
            segments[index] = ChainSegment(
                address: descriptor.addr, length: descriptor.len,
                deviceWritable: !readsIndirectTablesAsReadOnly && descriptor.flags & UInt16(CVS_VRING_DESC_F_WRITE) != 0)
        }
        return entries
    }

    /// Returns chain `head` (taken, in the order taken): writes a used descriptor with its
    /// buffer id at the next used slot, which skips the chain's length (§2.8.6).
    @inlinable
    package func putUsed(head: UInt16, length: UInt32) {
        let slot = nextUsed.slot
        memory.descriptors[slot].id = chainID[Int(head)]
        memory.descriptors[slot].len = length
        pendingSlots[pendingCount] = UInt16(truncatingIfNeeded: slot)
        pendingFlags[pendingCount] = nextUsed.usedFlags
        pendingCount &+= 1
        let chain = Int(chainLength[Int(head)])
        nextUsed = nextUsed.advanced(by: chain, size: size)
        outstanding &-= chain
    }

    @inlinable
    package func publishUsed() -> Bool {
        guard pendingCount > 0 else { return false }
        let ring = memory.descriptors
        var index = 1
        while index < pendingCount {
            cvs_store_relaxed_u16(cvs_pdesc_flags(ring, UInt32(pendingSlots[index])), pendingFlags[index])
            index &+= 1
        }
        // Release, and last: the batch's id/len writes and later flags are visible before the
        // driver can see its first used descriptor.
        let firstSlot = Int(pendingSlots[0])
        let firstFlags = pendingFlags[0]
        cvs_store_release_u16(cvs_pdesc_flags(ring, UInt32(firstSlot)), firstFlags)
        pendingCount = 0
        cvs_fence_seq_cst()
        let flags = cvs_load_relaxed_u16(cvs_pevent_flags(memory.driverEvent))
        switch Int(flags) {
        case Int(CVS_RING_EVENT_FLAGS_DISABLE):
            return false
        case Int(CVS_RING_EVENT_FLAGS_DESC) where usesEventIndex:
            let old = PackedRingPosition(slot: firstSlot, wrap: firstFlags != 0)
            let event = cvs_load_relaxed_u16(cvs_pevent_off_wrap(memory.driverEvent))
            return packedEventNeeded(event: event, old: old, new: nextUsed, size: size)
        default:
            return true
        }
    }

    @usableFromInline
    func markViolation(_ cause: RingViolation) {
        if violation == nil { violation = cause }
    }
}
