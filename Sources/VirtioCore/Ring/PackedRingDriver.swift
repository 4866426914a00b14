import CVirtioShim
import Synchronization

/// The driver half of a packed virtqueue (VIRTIO 1.1 §2.8): writes buffers into the ring in
/// order, collects the used descriptors the device writes back.
///
/// Every descriptor written carries an id of ours (one per descriptor, like a split ring's
/// descriptor index); a chain is named by its first id, which every descriptor of it carries as
/// its buffer id. Bookkeeping — cookies, chain lengths and links, free ids — lives in private
/// memory, never read back from the ring. Descriptors added between two ``publish()`` calls
/// become visible together: the batch's first descriptor gets its flags last, with release.
/// The used descriptors ``usedCount()`` finds are remembered (id and length), so what is taken
/// is exactly what was checked.
///
/// Completions are per buffer; IN_ORDER batching is not used with packed rings.
/// One thread owns a ring; only ``violation`` may be read from another.
@usableFromInline package final class PackedRingDriver {
    /// The shared ring memory.
    @usableFromInline package let memory: PackedRingMemory
    @usableFromInline package let size: Int
    /// Where the next descriptor goes.
    @exclusivity(unchecked) @usableFromInline var nextAvail = PackedRingPosition(slot: 0, wrap: true)
    /// The first descriptor of the unpublished batch (its flags not yet stored), or -1.
    @exclusivity(unchecked) @usableFromInline var pendingSlot = -1
    @exclusivity(unchecked) @usableFromInline var pendingFlags: UInt16 = 0
    /// Where the next used descriptor will be.
    @exclusivity(unchecked) @usableFromInline var nextUsed = PackedRingPosition(slot: 0, wrap: true)
    /// Where the next look for used descriptors starts (past every one found so far).
    @exclusivity(unchecked) @usableFromInline var scanUsed = PackedRingPosition(slot: 0, wrap: true)
    /// Used descriptors found and not taken: id and length, in ring order (circular).
    @usableFromInline let foundIDs: UnsafeMutablePointer<UInt16>
    @usableFromInline let foundLengths: UnsafeMutablePointer<UInt32>
    @exclusivity(unchecked) @usableFromInline var foundFirst = 0
    @exclusivity(unchecked) @usableFromInline var foundCount = 0
    /// Slots whose descriptors were published and not yet found used.
    @exclusivity(unchecked) @usableFromInline var publishedSlots = 0
    /// Slots added since the last publish.
    @exclusivity(unchecked) @usableFromInline var unpublishedSlots = 0
    /// Stack of free ids.
    @usableFromInline let freeStack: UnsafeMutablePointer<UInt16>
    @exclusivity(unchecked) @usableFromInline var freeCount: Int
    /// Per id: the caller's cookie, or `UInt32.max` when not in flight.
    @usableFromInline let cookies: UnsafeMutablePointer<UInt32>
    /// Per first id: the chain's slots in the ring while in flight (1 for an indirect table),
    /// else 0.
    @usableFromInline let chainSlots: UnsafeMutablePointer<UInt16>
    /// Per first id: the chain's descriptors (ids), for releasing them.
    @usableFromInline let chainLength: UnsafeMutablePointer<UInt16>
    /// Per id in a chain: the next id.
    @usableFromInline let nextInChain: UnsafeMutablePointer<UInt16>
    @inlinable package var violation: RingViolation? {
        violationFlag.load(ordering: .acquiring) ? violationCause : nil
    }
    @usableFromInline let violationFlag = Atomic<Bool>(false)
    /// VIRTIO_RING_F_EVENT_IDX: the device's event area may ask for a kick at one descriptor.
    @exclusivity(unchecked) @usableFromInline package var usesEventIndex = false
    /// Indirect tables, as for ``SplitRingDriver``: ``SplitRingDriver/indirectEntries``
    /// entries per id, in memory the device reads; nil without them.
    @exclusivity(unchecked) @usableFromInline var indirectTables: UnsafeMutablePointer<cvs_pvirtq_desc>?
    @exclusivity(unchecked) @usableFromInline var indirectTablesAddress: UInt64 = 0
    @usableFromInline let indirectCookies: UnsafeMutablePointer<UInt32>
    @usableFromInline let indirectCount: UnsafeMutablePointer<UInt8>
    /// Indirect descriptors negotiated; set before the ring runs.
    @exclusivity(unchecked) @usableFromInline package var usesIndirect = false

    @usableFromInline static let idle = UInt32.max
    @usableFromInline static var entries: Int { SplitRingDriver.indirectEntries }

    // Last: rarely read, so it stays off the cache lines of the fields the data path uses.
    @exclusivity(unchecked) @usableFromInline var violationCause: RingViolation?

    /// Takes over `memory` and zeroes it (both wrap counters at 1, slot 0).
    @usableFromInline package init(memory: PackedRingMemory) {
        self.memory = memory
        size = memory.size
        foundIDs = .allocate(capacity: memory.size)
        foundLengths = .allocate(capacity: memory.size)
        freeStack = .allocate(capacity: memory.size)
        cookies = .allocate(capacity: memory.size)
        chainSlots = .allocate(capacity: memory.size)
        chainLength = .allocate(capacity: memory.size)
        nextInChain = .allocate(capacity: memory.size)
        indirectCookies = .allocate(capacity: memory.size * Self.entries)
        indirectCount = .allocate(capacity: memory.size)
        freeCount = 0
        reset()
    }

    deinit {
        foundIDs.deallocate()
        foundLengths.deallocate()
        freeStack.deallocate()
        cookies.deallocate()
        chainSlots.deallocate()
        chainLength.deallocate()
        nextInChain.deallocate()
        indirectCookies.deallocate()
        indirectCount.deallocate()
    }

    /// Forgets every buffer (reclaim them first with ``reclaimAll(_:)``) and zeroes the ring.
    @usableFromInline package func reset() {
        nextAvail = PackedRingPosition(slot: 0, wrap: true)
        nextUsed = nextAvail
        scanUsed = nextAvail
        pendingSlot = -1
        foundFirst = 0
        foundCount = 0
        publishedSlots = 0
        unpublishedSlots = 0
        freeCount = size
        for i in 0..<size {
            freeStack[i] = UInt16(truncatingIfNeeded: size - 1 - i)
            cookies[i] = Self.idle
            chainSlots[i] = 0
            chainLength[i] = 0
            indirectCount[i] = 0
        }
        usesEventIndex = false
        usesIndirect = false
        violationFlag.store(false, ordering: .relaxed)
        violationCause = nil
        memory.descriptors.initialize(repeating: cvs_pvirtq_desc(), count: size)
        memory.driverEvent.initializeMemory(as: UInt8.self, repeating: 0, count: Int(CVS_PVIRTQ_EVENT_BYTES))
        memory.deviceEvent.initializeMemory(as: UInt8.self, repeating: 0, count: Int(CVS_PVIRTQ_EVENT_BYTES))
    }

    /// What SET_VRING_BASE announces: slot 0, wrap counter 1.
    @usableFromInline package var vringBase: UInt32 { 0x8000 }
    /// Descriptors (ids, and so slots) not in flight.
    @inlinable package var freeDescriptors: Int { freeCount }
    @inlinable package var inFlight: Int { size &- freeCount }
    /// Takes every used buffer, giving `each` every cookie of each (transmit completions):
    /// each used descriptor completes one buffer.
    @inlinable
    package func takeCompletions(_ each: (UInt32) -> Void) -> Int { takeEachUsed(each) }

    /// Bytes of indirect tables a ring of `size` needs (as for a split ring).
    @usableFromInline package func attachIndirectTables(at pointer: UnsafeMutableRawPointer, address: UInt64) {
        indirectTables = pointer.bindMemory(to: cvs_pvirtq_desc.self, capacity: size * Self.entries)
        indirectTablesAddress = address
    }

    /// Tells the device whether we want used-buffer notifications (the driver event area).
    @usableFromInline package func setInterruptsEnabled(_ enabled: Bool) {
        let flags = enabled ? CVS_RING_EVENT_FLAGS_ENABLE : CVS_RING_EVENT_FLAGS_DISABLE
        cvs_store_relaxed_u16(cvs_pevent_flags(memory.driverEvent), UInt16(flags))
        cvs_fence_seq_cst()
    }

    /// Writes one descriptor at the next slot: its flags now, or (the batch's first) at publish.
    @inlinable @inline(__always)
    func write(address: UInt64, length: UInt32, id: Int, flags: UInt16) {
        let slot = nextAvail.slot
        let ring = memory.descriptors
        ring[slot].addr = address
        ring[slot].len = length
        ring[slot].id = UInt16(truncatingIfNeeded: id)
        let marked = flags | nextAvail.availableFlags
        if pendingSlot < 0 {
            pendingSlot = slot
            pendingFlags = marked
        } else {
            cvs_store_relaxed_u16(cvs_pdesc_flags(ring, UInt32(slot)), marked)
        }
        nextAvail = nextAvail.advanced(by: 1, size: size)
        unpublishedSlots &+= 1
    }

    /// One single-descriptor buffer (unpublished until ``publish()``); false when no slot is free.
    @inlinable
    @discardableResult
    package func add(address: UInt64, length: UInt32, deviceWritable: Bool, cookie: UInt32) -> Bool {
        guard freeCount > 0 else { return false }
        freeCount &-= 1
        let id = Int(freeStack[freeCount])
        cookies[id] = cookie
        chainSlots[id] = 1
        chainLength[id] = 1
        write(address: address, length: length, id: id, flags: deviceWritable ? UInt16(CVS_VRING_DESC_F_WRITE) : 0)
        return true
    }

    /// A buffer of `count` parts: one indirect table when negotiated and it fits, else
    /// `count` consecutive descriptors linked with NEXT. False, adding nothing, when the slots
    /// are not free.
    @inlinable
    @discardableResult
    package func addChain(
        count: Int, deviceWritable: Bool,
        _ segment: (Int) -> (address: UInt64, length: UInt32, cookie: UInt32)
    ) -> Bool {
        let flags = deviceWritable ? UInt16(CVS_VRING_DESC_F_WRITE) : 0
        if usesIndirect, count > 1, count <= Self.entries, let tables = indirectTables {
            guard freeCount > 0 else { return false }
            freeCount &-= 1
            let id = Int(freeStack[freeCount])
            let table = tables + id &* Self.entries
            var i = 0
            while i < count {
                let part = segment(i)
                table[i] = cvs_pvirtq_desc(addr: part.address, len: part.length, id: 0, flags: flags)
                if i == 0 { cookies[id] = part.cookie } else { indirectCookies[id &* Self.entries &+ i] = part.cookie }
                i &+= 1
            }
            indirectCount[id] = UInt8(truncatingIfNeeded: count)
            chainSlots[id] = 1
            chainLength[id] = 1
            let address = indirectTablesAddress &+ UInt64(id &* Self.entries &* MemoryLayout<cvs_pvirtq_desc>.stride)
            write(address: address, length: UInt32(count &* MemoryLayout<cvs_pvirtq_desc>.stride), id: id, flags: UInt16(CVS_VRING_DESC_F_INDIRECT))
            return true
        }
        guard count >= 1, count <= size, freeCount >= count else { return false }
        let first = Int(freeStack[freeCount &- 1])
        var previous = first
        var i = 0
        while i < count {
            freeCount &-= 1
            let id = Int(freeStack[freeCount])
            let part = segment(i)
            cookies[id] = part.cookie
            chainSlots[id] = 0
            chainLength[id] = 0
            if i > 0 { nextInChain[previous] = UInt16(truncatingIfNeeded: id) }
            previous = id
            // Every descriptor carries the chain's id (the spec needs it in the last one).
            let last = i &+ 1 == count
            write(address: part.address, length: part.length, id: first, flags: last ? flags : flags | UInt16(CVS_VRING_DESC_F_NEXT))
            i &+= 1
        }
        chainSlots[first] = UInt16(truncatingIfNeeded: count)
        chainLength[first] = UInt16(truncatingIfNeeded: count)
        return true
    }

    /// Makes everything added since the last call available (the batch's first flags, stored
    /// last with release), then reports whether the device wants a kick.
    @inlinable
    package func publish() -> Bool {
        guard pendingSlot >= 0 else { return false }
        let old = PackedRingPosition(slot: pendingSlot, wrap: pendingFlags & UInt16(CVS_VIRTQ_DESC_F_AVAIL) != 0)
        cvs_store_release_u16(cvs_pdesc_flags(memory.descriptors, UInt32(pendingSlot)), pendingFlags)
        pendingSlot = -1
        publishedSlots &+= unpublishedSlots
        unpublishedSlots = 0
        // The event area must be read after the flags store: a full fence (§2.8.10).
        cvs_fence_seq_cst()
        let flags = cvs_load_relaxed_u16(cvs_pevent_flags(memory.deviceEvent))
        switch Int(flags) {
        case Int(CVS_RING_EVENT_FLAGS_DISABLE):
            return false
        case Int(CVS_RING_EVENT_FLAGS_DESC) where usesEventIndex:
            let event = cvs_load_relaxed_u16(cvs_pevent_off_wrap(memory.deviceEvent))
            return packedEventNeeded(event: event, old: old, new: nextAvail, size: size)
        default:
            return true
        }
    }

    /// How many used descriptors are ready to take. Each is checked as it is found: it must
    /// name a buffer in flight, and its chain may not run past the slots published.
    @inlinable
    package func usedCount() -> Int {
        if violationFlag.load(ordering: .relaxed) { return 0 }
        // Locals for the walk, written back once: class fields would be stored every round.
        var scan = scanUsed
        var published = publishedSlots
        var count = foundCount
        let ring = memory.descriptors
        while published > 0 {
            // Acquire: the device's id and length are read only after its flags (§2.8.5).
            let flags = cvs_load_acquire_u16(cvs_pdesc_flags(ring, UInt32(truncatingIfNeeded: scan.slot)))
            guard scan.isUsed(flags) else { break }
            let id = Int(ring[scan.slot].id)
            guard id < size, chainSlots[id] != 0 else {
                markViolation(.usedIdNotInFlight(id: id, slot: Int(scan.slot)))
                return 0
            }
            let slots = Int(chainSlots[id])
            guard slots <= published else {
                markViolation(.usedPastPublished(slot: Int(scan.slot), id: id, slots: slots, published: published))
                return 0
            }
            let index = wrapped(foundFirst &+ count)
            foundIDs[index] = UInt16(truncatingIfNeeded: id)
            foundLengths[index] = ring[scan.slot].len
            count &+= 1
            published &-= slots
            scan = scan.advanced(by: slots, size: size)
        }
        scanUsed = scan
        publishedSlots = published
        foundCount = count
        return count
    }

    /// The used buffer `ahead` places past the next one (`ahead` less than ``usedCount()``):
    /// its first cookie and the bytes written. Nil, with ``violation`` set, when two used
    /// descriptors named the same buffer.
    @inlinable @inline(__always)
    package func peekUsed(ahead: Int = 0) -> (cookie: UInt32, length: UInt32)? {
        let index = wrapped(foundFirst &+ ahead)
        let id = Int(foundIDs[index])
        guard chainLength[id] != 0 else {
            markRepeatedID(id)
            return nil
        }
        return (cookies[id], foundLengths[index])
    }

    /// Takes the buffer ``peekUsed(ahead:)`` (0) just returned.
    @inlinable @inline(__always)
    package func skipPeekedUsed() {
        let id = Int(foundIDs[foundFirst])
        advanceFound()
        releaseChain(first: id) { _ in }
    }

    /// Takes the next used buffer: its first cookie and the bytes written; `eachTail` gets the
    /// cookies of its other parts. Nil, with ``violation`` set, as for ``peekUsed(ahead:)``.
    @inlinable
    package func takeUsed(_ eachTail: (UInt32) -> Void = { _ in }) -> (cookie: UInt32, length: UInt32)? {
        guard let (cookie, length) = peekUsed() else { return nil }
        let id = Int(foundIDs[foundFirst])
        advanceFound()
        releaseChain(first: id, eachTail)
        return (cookie, length)
    }

    /// `index` (less than twice the size) brought into the ring: no division on the hot path.
    @inlinable @inline(__always)
    func wrapped(_ index: Int) -> Int {
        index >= size ? index &- size : index
    }

    @inlinable @inline(__always)
    func advanceFound() {
        foundFirst = foundFirst &+ 1 == size ? 0 : foundFirst &+ 1
        foundCount &-= 1
    }

    /// Frees a chain's ids, passing all cookies but the first to `eachTail`.
    @inlinable @inline(__always)
    func releaseChain(first: Int, _ eachTail: (UInt32) -> Void) {
        var id = first
        var remaining = Int(chainLength[id])
        chainLength[id] = 0
        chainSlots[id] = 0
        cookies[id] = Self.idle
        freeStack[freeCount] = UInt16(truncatingIfNeeded: id)
        freeCount &+= 1
        let indirect = Int(indirectCount[id])
        if indirect > 0 {
            for k in 1..<indirect { eachTail(indirectCookies[id &* Self.entries &+ k]) }
            indirectCount[id] = 0
        }
        while remaining > 1 {
            remaining &-= 1
            id = Int(nextInChain[id])
            eachTail(cookies[id])
            cookies[id] = Self.idle
            freeStack[freeCount] = UInt16(truncatingIfNeeded: id)
            freeCount &+= 1
        }
    }

    /// Calls `body` with the cookie of every buffer in flight and frees them (teardown).
    @usableFromInline package func reclaimAll(_ body: (UInt32) -> Void) {
        for id in 0..<size where cookies[id] != Self.idle {
            body(cookies[id])
            let indirect = Int(indirectCount[id])
            if indirect > 1 {
                for k in 1..<indirect { body(indirectCookies[id &* Self.entries &+ k]) }
            }
            indirectCount[id] = 0
            cookies[id] = Self.idle
            chainSlots[id] = 0
            chainLength[id] = 0
            freeStack[freeCount] = UInt16(truncatingIfNeeded: id)
            freeCount += 1
        }
        foundCount = 0
        publishedSlots = 0
        unpublishedSlots = 0
    }

    /// Stops the ring for a violation its user found (such as a bad `num_buffers`).
    @usableFromInline package func reportViolation(_ cause: RingViolation) {
        markViolation(cause)
    }

    @usableFromInline @inline(never)
    func markRepeatedID(_ id: Int) {
        markViolation(.usedTwice(id: id))
    }

    @usableFromInline
    func markViolation(_ cause: RingViolation) {
        guard !violationFlag.load(ordering: .relaxed) else { return }
        violationCause = cause
        violationFlag.store(true, ordering: .releasing)
    }
}
