import CVirtioShim

/// One descriptor of a chain, as the device reads it (addresses still in the driver's space).
@usableFromInline package struct ChainSegment: Sendable, Equatable {
    /// The driver's address of the buffer.
    @usableFromInline package var address: UInt64
    /// Its length in bytes.
    @usableFromInline package var length: UInt32
    /// True when the device may write it (VRING_DESC_F_WRITE).
    @usableFromInline package var deviceWritable: Bool

    /// Creates a segment.
    @usableFromInline package init(address: UInt64, length: UInt32, deviceWritable: Bool) {
        self.address = address
        self.length = length
        self.deviceWritable = deviceWritable
    }
}

/// The device half of a split virtqueue: takes available chains, returns used ones.
///
/// Every value read from the ring comes from the driver and is checked before use: the
/// available index may not run ahead by more than the queue size, heads and `next` links must
/// be inside the table, chains may not loop or exceed the queue size. A violation stops the
/// ring (``violation`` says why) instead of trusting the value. One thread owns a ring.
/// Mutable state is `@exclusivity(unchecked)`: one thread owns the ring, and the dynamic
/// exclusivity check on every access cost more than the ring work itself (half the
/// instructions of a transmit burst under callgrind).
@usableFromInline package final class SplitRingDevice: DeviceRing {
    /// The shared ring memory.
    @usableFromInline package let memory: SplitRingMemory
    @usableFromInline let mask: Int
    /// Next available entry to take.
    @exclusivity(unchecked) @usableFromInline var lastAvail: UInt16
    /// Next used slot to fill (published by ``publishUsed()``).
    @exclusivity(unchecked) @usableFromInline var usedShadow: UInt16
    /// VIRTIO_RING_F_EVENT_IDX: notifications follow `avail_event` / `used_event` instead of
    /// the flags. Set before the ring runs.
    @exclusivity(unchecked) @usableFromInline package var usesEventIndex = false

    // Last: rarely read, so it stays off the cache lines of the fields the data path uses.
    /// Set when the driver broke the protocol; the ring is unusable from then on.
    @exclusivity(unchecked) @usableFromInline package private(set) var violation: RingViolation?

    /// Starts a device view at `baseIndex` (the value of SET_VRING_BASE).
    @usableFromInline package init(memory: SplitRingMemory, baseIndex: UInt16 = 0) {
        self.memory = memory
        mask = memory.size - 1
        lastAvail = baseIndex
        usedShadow = baseIndex
    }

    /// The queue size.
    @inlinable package var size: Int { mask + 1 }
    /// Where the device stopped: the value GET_VRING_BASE reports.
    @usableFromInline package var availIndex: UInt16 { lastAvail }
    /// ``availIndex`` as GET_VRING_BASE carries it.
    @usableFromInline package var vringBase: UInt32 { UInt32(lastAvail) }

    /// Asks the driver for kicks (true) or tells it not to bother (false,
    /// VRING_USED_F_NO_NOTIFY). The fence orders this store before the caller's next check of
    /// the available index, so a kick cannot be missed between the two (§2.7.10).
    @usableFromInline package func setNotificationsEnabled(_ enabled: Bool) {
        cvs_store_relaxed_u16(cvs_used_flags(memory.used), enabled ? 0 : UInt16(CVS_VRING_USED_F_NO_NOTIFY))
        if usesEventIndex {
            // Kick me when the next entry arrives, or (polling) only about once per 32,768.
            let event = enabled ? lastAvail : lastAvail &+ 0x7FFF
            cvs_store_relaxed_u16(cvs_used_avail_event(memory.used, UInt32(memory.size)), event)
        }
        cvs_fence_seq_cst()
    }

    /// How many chains the driver has made available and we have not taken.
    @inlinable
    package func availableCount() -> Int {
        if violation != nil { return 0 }
        // Acquire: ring entries and descriptors are read only after the index (§2.7.13).
        let availIdx = cvs_load_acquire_u16(cvs_avail_idx(memory.avail))
        let count = Int(availIdx &- lastAvail)
        if count > mask + 1 {
            markViolation(.availableIndexJump(count: count, queueSize: mask + 1))
            return 0
        }
        return count
    }

    /// The available head `ahead` entries past the next one, without taking it (`ahead` less
    /// than ``availableCount()``). Nil, with ``violation`` set, when the driver wrote a head
    /// outside the table.
    @inlinable
    package func peekAvailable(ahead: Int = 0) -> UInt16? {
        let head = cvs_avail_ring(memory.avail)[(Int(lastAvail) &+ ahead) & mask]
        guard Int(head) <= mask else {
            markViolation(.headOutOfRange(head: Int(head), queueSize: mask + 1))
            return nil
        }
        return head
    }

    /// Consumes the next `count` heads ``peekAvailable(ahead:)`` returned.
    @inlinable
    package func skipAvailable(_ count: Int = 1) {
        lastAvail &+= UInt16(truncatingIfNeeded: count)
    }

    /// Takes the next available head (call at most ``availableCount()`` times).
    @inlinable
    package func takeAvailable() -> UInt16? {
        guard let head = peekAvailable() else { return nil }
        lastAvail &+= 1
        return head
    }

    /// Reads the chain starting at `head` (see ``DeviceRing/readChain(head:into:capacity:allowsIndirect:_:)``):
    /// nil with ``violation`` set when a link leaves the table or the chain is longer than the
    /// queue or `capacity`. A head that is indirect (VRING_DESC_F_INDIRECT, alone) names a
    /// table of up to the queue size descriptors, read with the same checks; a table may not
    /// nest another.
    @inlinable
    package func readChain(
        head: UInt16, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int,
        allowsIndirect: Bool, _ indirect: (UInt64, Int) -> UnsafeMutableRawPointer?
    ) -> Int? {
        var index = Int(head)
        var count = 0
        while true {
            // One copy of the descriptor: the driver may change it while we look, so every
            // check and use below refers to this snapshot, never to shared memory again.
            let descriptor = memory.descriptors[index]
            if descriptor.flags & UInt16(CVS_VRING_DESC_F_INDIRECT) != 0 {
                guard allowsIndirect else {
                    markViolation(.indirectNotNegotiated(index: index))
                    return nil
                }
                // Only a chain's only descriptor may be indirect (§2.7.5.3.1).
                guard count == 0, descriptor.flags & UInt16(CVS_VRING_DESC_F_NEXT) == 0 else {
                    markViolation(.indirectInsideChain(index: index))
                    return nil
                }
                return readIndirect(descriptor, head: head, into: segments, capacity: capacity, indirect)
            }
            guard count < capacity, count <= mask else {
                markViolation(.chainTooLong(head: Int(head), limit: min(capacity, mask + 1)))
                return nil
            }
            segments[count] = ChainSegment(
                address: descriptor.addr, length: descriptor.len,
                deviceWritable: descriptor.flags & UInt16(CVS_VRING_DESC_F_WRITE) != 0)
            count &+= 1
            guard descriptor.flags & UInt16(CVS_VRING_DESC_F_NEXT) != 0 else { return count }
            index = Int(descriptor.next)
            guard index <= mask else {
                markViolation(.linkOutOfRange(next: Int(descriptor.next), entries: mask + 1, indirect: false))
                return nil
            }
        }
    }

    /// Reads an indirect table (see ``readChain(head:into:capacity:indirect:)``).
    @usableFromInline
    func readIndirect(
        _ table: cvs_vring_desc, head: UInt16, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int,
        _ indirect: (UInt64, Int) -> UnsafeMutableRawPointer?
    ) -> Int? {
        let entrySize = MemoryLayout<cvs_vring_desc>.stride
        let entries = Int(table.len) / entrySize
        guard Int(table.len) % entrySize == 0, entries >= 1, entries <= mask &+ 1 else {
            markViolation(.indirectTableLength(head: Int(head), bytes: Int(table.len), maximumEntries: mask + 1))
            return nil
        }
        guard let base = indirect(table.addr, Int(table.len)) else {
            markViolation(.indirectTableOutsideMemory(address: table.addr, bytes: Int(table.len)))
            return nil
        }
        var index = 0
        var count = 0
        while true {
            // A snapshot, as for the ring's own table; the table need not be aligned.
            let descriptor = base.loadUnaligned(fromByteOffset: index &* entrySize, as: cvs_vring_desc.self)
            guard descriptor.flags & UInt16(CVS_VRING_DESC_F_INDIRECT) == 0 else {
                markViolation(.nestedIndirect(head: Int(head)))
                return nil
            }
            guard count < capacity, count < entries else {
                markViolation(.chainTooLong(head: Int(head), limit: min(capacity, entries)))
                return nil
            }
            segments[count] = ChainSegment(
                address: descriptor.addr, length: descriptor.len,
                deviceWritable: descriptor.flags & UInt16(CVS_VRING_DESC_F_WRITE) != 0)
            count &+= 1
            guard descriptor.flags & UInt16(CVS_VRING_DESC_F_NEXT) != 0 else { return count }
            index = Int(descriptor.next)
            guard index < entries else {
                markViolation(.linkOutOfRange(next: Int(descriptor.next), entries: entries, indirect: true))
                return nil
            }
        }
    }

    /// Returns chain `head` to the driver with `length` bytes written (unpublished until
    /// ``publishUsed()``).
    @inlinable
    package func putUsed(head: UInt16, length: UInt32) {
        cvs_used_ring(memory.used)[Int(usedShadow) & mask] = cvs_vring_used_elem(id: UInt32(head), len: length)
        usedShadow &+= 1
    }

    /// Publishes the used entries put since the last call (one release store) and reports
    /// whether the driver wants an interrupt (VRING_AVAIL_F_NO_INTERRUPT clear).
    @inlinable
    package func publishUsed() -> Bool {
        let usedIdx = cvs_used_idx(memory.used)
        let old = cvs_load_relaxed_u16(usedIdx)
        if old == usedShadow { return false }
        // Release: the entries become visible before the index that covers them (§2.7.14).
        cvs_store_release_u16(usedIdx, usedShadow)
        cvs_fence_seq_cst()
        if usesEventIndex {
            let event = cvs_load_relaxed_u16(cvs_avail_used_event(memory.avail, UInt32(mask &+ 1)))
            return RingEvent.needed(event: event, new: usedShadow, old: old)
        }
        return cvs_load_relaxed_u16(cvs_avail_flags(memory.avail)) & UInt16(CVS_VRING_AVAIL_F_NO_INTERRUPT) == 0
    }

    @usableFromInline
    func markViolation(_ cause: RingViolation) {
        if violation == nil { violation = cause }
    }
}
