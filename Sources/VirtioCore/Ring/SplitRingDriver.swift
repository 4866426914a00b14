import CVirtioShim
import Synchronization

/// The driver half of a split virtqueue: makes buffers available, collects used ones.
///
/// Bookkeeping (free descriptors, what each descriptor carries) is kept in private memory, never
/// read back from the shared ring: the device can scribble on shared memory, not on this.
/// Its mutable state is marked `@exclusivity(unchecked)`: one thread owns the ring, and the
/// dynamic exclusivity check on each access cost more than the ring operation itself (half the
/// instructions of a transmit burst, measured with callgrind).
/// One thread owns a ring; the type is deliberately not `Sendable`. Only ``violation`` may be
/// read from another thread (a link monitor does).
@usableFromInline package final class SplitRingDriver {
    /// The shared ring memory.
    @usableFromInline package let memory: SplitRingMemory
    @usableFromInline let mask: Int
    /// Next free slot in the available ring (not yet published past ``publishedAvail``).
    @exclusivity(unchecked) @usableFromInline var availShadow: UInt16
    /// The available index last published: the device has seen nothing beyond it.
    @exclusivity(unchecked) @usableFromInline var publishedAvail: UInt16
    /// Where the next used entry will be read.
    @exclusivity(unchecked) @usableFromInline var lastUsed: UInt16
    /// The used entry ``peekUsed(ahead:)`` (0) last checked, valid while `lastUsed` is still
    /// `peekedPosition`: taking it uses this copy, never a second read of shared memory, which
    /// the device may have rewritten since the check (to an id out of range, or another
    /// buffer's). -1: none.
    @exclusivity(unchecked) @usableFromInline var peekedPosition = -1
    @exclusivity(unchecked) @usableFromInline var peekedEntry = cvs_vring_used_elem()
    /// Stack of free descriptor ids.
    @usableFromInline let freeStack: UnsafeMutablePointer<UInt16>
    @exclusivity(unchecked) @usableFromInline var freeCount: Int
    /// For each descriptor id: the caller's cookie, or `UInt32.max` when not in flight.
    @usableFromInline let cookies: UnsafeMutablePointer<UInt32>
    /// For each descriptor id: the length of the chain it heads while in flight, else 0 (also
    /// for the other descriptors of a chain: the device may only name heads).
    @usableFromInline let chainLength: UnsafeMutablePointer<UInt16>
    /// For each descriptor id in a chain: the next descriptor (private: never read back from
    /// the shared table, which the device could have changed).
    @usableFromInline let nextInChain: UnsafeMutablePointer<UInt16>
    /// Set when the device broke the protocol; the ring is unusable from then on. Safe to read
    /// from any thread: the cause is written once, before the flag that publishes it.
    @inlinable package var violation: RingViolation? {
        violationFlag.load(ordering: .acquiring) ? violationCause : nil
    }
    @usableFromInline let violationFlag = Atomic<Bool>(false)
    /// The index both sides started from at the last reset (what SET_VRING_BASE announces).
    @usableFromInline package private(set) var startIndex: UInt16 = 0
    /// VIRTIO_RING_F_EVENT_IDX: notifications follow `used_event` / `avail_event` instead of
    /// the flags. Set by the control path before the ring runs.
    @exclusivity(unchecked) @usableFromInline package var usesEventIndex = false
    /// Indirect tables (VIRTIO_RING_F_INDIRECT_DESC): one table of ``indirectEntries``
    /// descriptors per ring descriptor, in memory the device can read; nil without them.
    @exclusivity(unchecked) @usableFromInline var indirectTables: UnsafeMutablePointer<cvs_vring_desc>?
    /// The device's address of the first table.
    @exclusivity(unchecked) @usableFromInline var indirectTablesAddress: UInt64 = 0
    /// Descriptors per indirect table.
    @usableFromInline package static let indirectEntries = 8
    /// For each descriptor id heading an indirect table in flight: its entries' cookies, and
    /// how many there are (0 otherwise).
    @usableFromInline let indirectCookies: UnsafeMutablePointer<UInt32>
    @usableFromInline let indirectCount: UnsafeMutablePointer<UInt8>
    /// Indirect descriptors negotiated: ``addChain(count:deviceWritable:_:)`` uses a table
    /// when the buffer fits one. Set by the control path before the ring runs.
    @exclusivity(unchecked) @usableFromInline package var usesIndirect = false

    /// VIRTIO_F_IN_ORDER: descriptors are used in ring order (§2.7.8.1), so the used entry at
    /// each position stands for the buffer made available at the same position. The device may
    /// complete a batch with one entry (at the batch's first position, naming its last buffer)
    /// and move the used index past the whole batch: the used index counts buffers.
    @exclusivity(unchecked) @usableFromInline package private(set) var usesInOrder = false
    /// In order: the next descriptor to hand out.
    @exclusivity(unchecked) @usableFromInline var nextInOrder = 0
    /// The head of each buffer made available, by available-ring position.
    @usableFromInline let availHeads: UnsafeMutablePointer<UInt16>
    /// In order: ``takeCompletions(_:)`` takes completed buffers by the used index alone, as
    /// batches allow, without reading an entry (transmit rings, whose used lengths carry
    /// nothing). A receive ring needs every buffer's length, so there a batch breaks the
    /// protocol. Set once by the owner.
    @exclusivity(unchecked) @usableFromInline package var acceptsBatchedCompletions = false

    /// Turns in-order use on or off for this session; call after ``reset(startIndex:)`` and
    /// the first refill (which hands out descriptors 0, 1, 2, … in order), before the ring runs.
    @usableFromInline package func setInOrder(_ on: Bool) {
        usesInOrder = on
        nextInOrder = inFlight & mask
    }

    /// Bytes of indirect tables a ring of `size` needs.
    @usableFromInline package static func indirectBytesNeeded(size: Int) -> Int { size * indirectEntries * MemoryLayout<cvs_vring_desc>.stride }

    /// Gives the ring memory for its indirect tables (``indirectBytesNeeded(size:)`` bytes at
    /// `pointer`, which the device sees at `address`).
    @usableFromInline package func attachIndirectTables(at pointer: UnsafeMutableRawPointer, address: UInt64) {
        indirectTables = pointer.bindMemory(to: cvs_vring_desc.self, capacity: memory.size * Self.indirectEntries)
        indirectTablesAddress = address
    }

    /// How far ahead `used_event` is set when we poll: the device then signals about once
    /// per 32,768 buffers instead of never, which costs nothing measurable.
    @usableFromInline static let quietDistance: UInt16 = 0x7FFF

    @usableFromInline static let idle = UInt32.max

    // Last: rarely read, so it stays off the cache lines of the fields the data path uses.
    @exclusivity(unchecked) @usableFromInline var violationCause: RingViolation?

    /// Takes over `memory`, zeroes it and starts both indices at `startIndex`.
    @usableFromInline package init(memory: SplitRingMemory, startIndex: UInt16 = 0) {
        self.memory = memory
        mask = memory.size - 1
        availShadow = startIndex
        publishedAvail = startIndex
        lastUsed = startIndex
        freeStack = .allocate(capacity: memory.size)
        cookies = .allocate(capacity: memory.size)
        chainLength = .allocate(capacity: memory.size)
        nextInChain = .allocate(capacity: memory.size)
        indirectCookies = .allocate(capacity: memory.size * Self.indirectEntries)
        indirectCount = .allocate(capacity: memory.size)
        indirectCount.initialize(repeating: 0, count: memory.size)
        availHeads = .allocate(capacity: memory.size)
        availHeads.initialize(repeating: 0, count: memory.size)
        freeCount = 0
        cookies.initialize(repeating: Self.idle, count: memory.size)
        chainLength.initialize(repeating: 0, count: memory.size)
        nextInChain.initialize(repeating: 0, count: memory.size)
        reset(startIndex: startIndex)
    }

    /// Forgets every buffer (the caller reclaims them first with ``reclaimAll(_:)``), zeroes
    /// the shared ring and starts both indices at `startIndex`. For a fresh session.
    @usableFromInline package func reset(startIndex: UInt16 = 0) {
        self.startIndex = startIndex
        usesEventIndex = false
        usesInOrder = false
        nextInOrder = 0
        publishedAvail = startIndex
        availShadow = startIndex
        lastUsed = startIndex
        peekedPosition = -1
        freeCount = memory.size
        for i in 0..<memory.size {
            freeStack[i] = UInt16(truncatingIfNeeded: memory.size - 1 - i)
            cookies[i] = Self.idle
            chainLength[i] = 0
            indirectCount[i] = 0
        }
        usesIndirect = false
        violationFlag.store(false, ordering: .relaxed)
        violationCause = nil
        memory.descriptors.initialize(repeating: cvs_vring_desc(), count: memory.size)
        memory.avail.initializeMemory(as: UInt8.self, repeating: 0, count: cvs_vring_avail_bytes(UInt32(memory.size)))
        memory.used.initializeMemory(as: UInt8.self, repeating: 0, count: cvs_vring_used_bytes(UInt32(memory.size)))
        cvs_avail_idx(memory.avail).pointee = startIndex
        cvs_used_idx(memory.used).pointee = startIndex
    }

    deinit {
        freeStack.deallocate()
        cookies.deallocate()
        chainLength.deallocate()
        nextInChain.deallocate()
        indirectCookies.deallocate()
        indirectCount.deallocate()
        availHeads.deallocate()
    }

    /// The queue size.
    @inlinable package var size: Int { mask + 1 }
    /// Descriptors not in flight.
    @inlinable package var freeDescriptors: Int { freeCount }
    /// Descriptors handed to the device and not yet returned.
    @inlinable package var inFlight: Int { mask + 1 - freeCount }
    /// The available index as published (the value to report as the ring's base).
    @usableFromInline package var availIndex: UInt16 { availShadow }

    /// Tells the device whether we want interrupts (call notifications) for used buffers:
    /// with EVENT_IDX by moving `used_event` to the next entry (or far ahead), otherwise with
    /// VRING_AVAIL_F_NO_INTERRUPT. The fence orders this before the caller's next look at the
    /// used index (§2.7.7.2).
    @usableFromInline package func setInterruptsEnabled(_ enabled: Bool) {
        cvs_store_relaxed_u16(cvs_avail_flags(memory.avail), enabled ? 0 : UInt16(CVS_VRING_AVAIL_F_NO_INTERRUPT))
        if usesEventIndex {
            let event = enabled ? lastUsed : lastUsed &+ Self.quietDistance
            cvs_store_relaxed_u16(cvs_avail_used_event(memory.avail, UInt32(memory.size)), event)
        }
        cvs_fence_seq_cst()
    }

    /// Puts one single-descriptor buffer on the available ring (unpublished until
    /// ``publish()``). Returns false when no descriptor is free.
    ///
    /// - Parameters:
    ///   - address: the buffer's address as the device sees it.
    ///   - length: bytes the device may read (or write, with `deviceWritable`).
    ///   - deviceWritable: the device writes this buffer (receive); otherwise it reads it.
    ///   - cookie: returned with the buffer by ``takeUsed(_:)``; must not be `UInt32.max`.
    @inlinable
    @discardableResult
    package func add(address: UInt64, length: UInt32, deviceWritable: Bool, cookie: UInt32) -> Bool {
        guard freeCount > 0, let id = takeDescriptor() else { return false }
        cookies[id] = cookie
        chainLength[id] = 1
        memory.descriptors[id] = cvs_vring_desc(
            addr: address, len: length,
            flags: deviceWritable ? UInt16(CVS_VRING_DESC_F_WRITE) : 0, next: 0)
        makeAvailable(head: id)
        return true
    }

    /// The next free descriptor (the caller checked `freeCount`): the most recently freed one,
    /// or in order the next in ring order. Nil, with ``violation`` set, when in-order use finds
    /// it still in flight (the device completed out of order).
    @inlinable @inline(__always)
    func takeDescriptor() -> Int? {
        if usesInOrder {
            let id = nextInOrder
            guard cookies[id] == Self.idle else {
                markViolation(.inOrderStillInFlight(id: Int(id)))
                return nil
            }
            nextInOrder = (id &+ 1) & mask
            freeCount &-= 1
            return id
        }
        freeCount &-= 1
        return Int(freeStack[freeCount])
    }

    /// Puts `head` on the available ring (unpublished) and remembers it by position. The slot
    /// is written only when it changes: in order, slot i holds i lap after lap, and an
    /// unwritten line stays in the device's cache (as DPDK's in-order path does).
    @inlinable @inline(__always)
    func makeAvailable(head: Int) {
        let position = Int(availShadow) & mask
        let value = UInt16(truncatingIfNeeded: head)
        let slot = cvs_avail_ring(memory.avail) + position
        if slot.pointee != value { slot.pointee = value }
        availHeads[position] = value
        availShadow &+= 1
    }

    /// Puts one buffer made of `count` descriptors chained with VRING_DESC_F_NEXT on the
    /// available ring (unpublished until ``publish()``); `segment(i)` gives the i-th
    /// descriptor's address, length and cookie. Returns false, adding nothing, when fewer than
    /// `count` descriptors are free (or `count` is 0 or more than 65535).
    @inlinable
    @discardableResult
    package func addChain(
        count: Int, deviceWritable: Bool,
        _ segment: (Int) -> (address: UInt64, length: UInt32, cookie: UInt32)
    ) -> Bool {
        if usesIndirect, count > 1, count <= Self.indirectEntries, let tables = indirectTables {
            return addIndirect(count: count, flags: deviceWritable ? UInt16(CVS_VRING_DESC_F_WRITE) : 0, tables: tables, segment)
        }
        guard count >= 1, count <= Int(UInt16.max), freeCount >= count else { return false }
        let flags = deviceWritable ? UInt16(CVS_VRING_DESC_F_WRITE) : 0
        var head = 0
        var previous = 0
        var i = 0
        while i < count {
            // In order, a chain's descriptors are consecutive; freeCount covers them all.
            guard let id = takeDescriptor() else { return false }
            let part = segment(i)
            cookies[id] = part.cookie
            chainLength[id] = 0
            memory.descriptors[id] = cvs_vring_desc(addr: part.address, len: part.length, flags: flags, next: 0)
            if i == 0 {
                head = id
            } else {
                // Link the previous descriptor to this one (nothing is published yet).
                memory.descriptors[previous].flags = flags | UInt16(CVS_VRING_DESC_F_NEXT)
                memory.descriptors[previous].next = UInt16(truncatingIfNeeded: id)
                nextInChain[previous] = UInt16(truncatingIfNeeded: id)
            }
            previous = id
            i &+= 1
        }
        chainLength[head] = UInt16(truncatingIfNeeded: count)
        makeAvailable(head: head)
        return true
    }

    /// One ring descriptor pointing at this descriptor's own indirect table, filled with the
    /// buffer's `count` parts.
    @inlinable
    func addIndirect(
        count: Int, flags: UInt16, tables: UnsafeMutablePointer<cvs_vring_desc>,
        _ segment: (Int) -> (address: UInt64, length: UInt32, cookie: UInt32)
    ) -> Bool {
        guard freeCount > 0, let id = takeDescriptor() else { return false }
        let table = tables + id &* Self.indirectEntries
        var i = 0
        while i < count {
            let part = segment(i)
            let last = i &+ 1 == count
            table[i] = cvs_vring_desc(
                addr: part.address, len: part.length,
                flags: last ? flags : flags | UInt16(CVS_VRING_DESC_F_NEXT),
                next: UInt16(truncatingIfNeeded: i &+ 1))
            if i == 0 { cookies[id] = part.cookie } else { indirectCookies[id &* Self.indirectEntries &+ i] = part.cookie }
            i &+= 1
        }
        indirectCount[id] = UInt8(truncatingIfNeeded: count)
        chainLength[id] = 1
        let address = indirectTablesAddress &+ UInt64(id &* Self.indirectEntries &* MemoryLayout<cvs_vring_desc>.stride)
        memory.descriptors[id] = cvs_vring_desc(
            addr: address, len: UInt32(count &* MemoryLayout<cvs_vring_desc>.stride),
            flags: UInt16(CVS_VRING_DESC_F_INDIRECT), next: 0)
        makeAvailable(head: id)
        return true
    }

    /// Publishes everything added since the last call (one release store), then reports
    /// whether the device asked to be notified (VRING_USED_F_NO_NOTIFY clear).
    @inlinable
    package func publish() -> Bool {
        let availIdx = cvs_avail_idx(memory.avail)
        if cvs_load_relaxed_u16(availIdx) == availShadow { return false }
        let old = publishedAvail
        // Release: descriptors and ring entries become visible before the new index (§2.7.13).
        cvs_store_release_u16(availIdx, availShadow)
        publishedAvail = availShadow
        // The flag or event read must not move before the index store (§2.7.7): a full fence.
        cvs_fence_seq_cst()
        if usesEventIndex {
            let event = cvs_load_relaxed_u16(cvs_used_avail_event(memory.used, UInt32(mask &+ 1)))
            return RingEvent.needed(event: event, new: availShadow, old: old)
        }
        return cvs_load_relaxed_u16(cvs_used_flags(memory.used)) & UInt16(CVS_VRING_USED_F_NO_NOTIFY) == 0
    }

    /// How many used entries are ready to take. Zero also when the device broke the protocol
    /// (see ``violation``).
    @inlinable
    package func usedCount() -> Int {
        if violationFlag.load(ordering: .relaxed) { return 0 }
        // Acquire: the used entries are read only after the index that covers them (§2.7.14).
        let usedIdx = cvs_load_acquire_u16(cvs_used_idx(memory.used))
        let count = Int(usedIdx &- lastUsed)
        // Only published buffers can come back: the device never saw the others.
        let outstanding = Int(publishedAvail &- lastUsed)
        if count > outstanding {
            markViolation(.usedIndexJump(count: count, outstanding: outstanding))
            return 0
        }
        return count
    }

    /// The used entry `ahead` entries past the next one, without taking it (`ahead` less than
    /// ``usedCount()``): the cookie of the buffer's first descriptor and the bytes the device
    /// wrote. Nil, with ``violation`` set, when the entry names a descriptor that does not head
    /// a buffer in flight.
    @inlinable @inline(__always)
    package func peekUsed(ahead: Int = 0) -> (cookie: UInt32, length: UInt32)? {
        let element = cvs_used_ring(memory.used)[(Int(lastUsed) &+ ahead) & mask]
        let id = Int(element.id)
        guard id <= mask, chainLength[id] != 0 else {
            markBadUsedEntry(element.id)
            return nil
        }
        if usesInOrder, id != Int(availHeads[(Int(lastUsed) &+ ahead) & mask]) {
            markOutOfOrder(element.id)
            return nil
        }
        if ahead == 0 {
            peekedPosition = Int(lastUsed)
            peekedEntry = element
        }
        return (cookies[id], element.len)
    }

    /// Takes the next used entry that ``peekUsed(ahead:)`` (with `ahead` 0) just returned, as
    /// the peek read and checked it: its descriptors become free. For single-descriptor
    /// buffers (receive), whose cookie the peek already gave.
    @inlinable @inline(__always)
    package func skipPeekedUsed() {
        guard peekedPosition == Int(lastUsed) else {
            _ = takeUsed()  // no peek to go by: read and check it now
            return
        }
        let id = Int(peekedEntry.id)
        peekedPosition = -1
        lastUsed &+= 1
        releaseChain(head: id) { _ in }
    }

    /// Takes the next used entry (call at most ``usedCount()`` times): the cookie of the
    /// buffer's first descriptor and the bytes the device wrote; `eachTail` gets the cookies of
    /// the buffer's other descriptors (a chain). All its descriptors become free. Nil, with
    /// ``violation`` set, when the entry names a descriptor that does not head a buffer in
    /// flight.
    @inlinable
    package func takeUsed(_ eachTail: (UInt32) -> Void = { _ in }) -> (cookie: UInt32, length: UInt32)? {
        // The entry a peek checked, if it is this one: the device may have rewritten it since.
        let element: cvs_vring_used_elem
        if peekedPosition == Int(lastUsed) {
            element = peekedEntry
            peekedPosition = -1
        } else {
            element = cvs_used_ring(memory.used)[Int(lastUsed) & mask]
        }
        let id = Int(element.id)
        guard id <= mask, chainLength[id] != 0 else {
            markBadUsedEntry(element.id)
            return nil
        }
        // In order, the entry names the buffer made available at its own position (a batch,
        // which names a later one, is for ``takeCompletions(_:)``).
        if usesInOrder, id != Int(availHeads[Int(lastUsed) & mask]) {
            markOutOfOrder(element.id)
            return nil
        }
        lastUsed &+= 1
        let cookie = cookies[id]
        releaseChain(head: id, eachTail)
        return (cookie, element.len)
    }

    /// Takes every used buffer whose length does not matter (transmit completions): `each`
    /// gets every cookie of every buffer (a chain's parts too). Returns the buffers taken.
    ///
    /// In order with ``acceptsBatchedCompletions``, the used index alone says how many buffers
    /// are done, and they are the oldest ones in flight: no entry is read, so the lines the
    /// device writes stay in its cache (DPDK's `virtio_xmit_cleanup_inorder` does the same).
    /// A device that lies in the index can only hand back buffers it has not read yet, which
    /// costs it its own frames; the index is still checked against what was published.
    @inlinable
    package func takeCompletions(_ each: (UInt32) -> Void) -> Int {
        guard usesInOrder && acceptsBatchedCompletions else { return takeEachUsed(each) }
        let count = usedCount()
        peekedPosition = -1
        var i = 0
        while i < count {
            let head = Int(availHeads[Int(lastUsed) & mask])
            // Still in flight, unless something reclaimed it: then no completion may free it
            // (its descriptor is free, its buffer back in the pool) a second time.
            guard chainLength[head] != 0 else {
                markBadUsedEntry(UInt32(truncatingIfNeeded: head))
                return i
            }
            each(cookies[head])
            releaseChain(head: head, each)
            lastUsed &+= 1
            i &+= 1
        }
        return count
    }

    /// Frees the descriptors of the chain headed by `head` (in flight), passing the cookies of
    /// all but the head to `eachTail`.
    @inlinable @inline(__always)
    func releaseChain(head: Int, _ eachTail: (UInt32) -> Void) {
        var id = head
        var remaining = Int(chainLength[id])
        chainLength[id] = 0
        cookies[id] = Self.idle
        freeStack[freeCount] = UInt16(truncatingIfNeeded: id)
        freeCount &+= 1
        let indirect = Int(indirectCount[id])
        if indirect > 0 {
            for k in 1..<indirect { eachTail(indirectCookies[id &* Self.indirectEntries &+ k]) }
            indirectCount[id] = 0
        }
        // The rest of a chain, if any (rare: one descriptor per buffer is the common case).
        while remaining > 1 {
            remaining &-= 1
            id = Int(nextInChain[id])
            eachTail(cookies[id])
            cookies[id] = Self.idle
            freeStack[freeCount] = UInt16(truncatingIfNeeded: id)
            freeCount &+= 1
        }
    }

    @usableFromInline @inline(never)
    func markOutOfOrder(_ id: UInt32) {
        markViolation(.usedOutOfOrder(id: Int(id), perBuffer: !acceptsBatchedCompletions))
    }

    /// Kept out of line, so the functions that check used entries stay small enough to inline.
    @usableFromInline @inline(never)
    func markBadUsedEntry(_ id: UInt32) {
        markViolation(.usedIdNotInFlight(id: Int(id), slot: nil))
    }

    /// Calls `body` with the cookie of every buffer still in flight and marks them free: used
    /// when a ring is torn down so no buffer is lost. Nothing is outstanding afterwards: a used
    /// index the device moves later (a back-end still finishing as it leaves) is a violation,
    /// never a completion of a buffer that is already back with its owner.
    @usableFromInline package func reclaimAll(_ body: (UInt32) -> Void) {
        publishedAvail = availShadow
        lastUsed = availShadow
        peekedPosition = -1
        for id in 0...mask where cookies[id] != Self.idle {
            body(cookies[id])
            let indirect = Int(indirectCount[id])
            if indirect > 1 {
                for k in 1..<indirect { body(indirectCookies[id &* Self.indirectEntries &+ k]) }
            }
            indirectCount[id] = 0
            cookies[id] = Self.idle
            chainLength[id] = 0
            freeStack[freeCount] = UInt16(truncatingIfNeeded: id)
            freeCount += 1
        }
    }

    /// Stops the ring for a violation its user detected (such as a bad `num_buffers`): the
    /// first one is kept in ``violation``.
    @usableFromInline package func reportViolation(_ cause: RingViolation) {
        markViolation(cause)
    }

    @usableFromInline
    func markViolation(_ cause: RingViolation) {
        guard !violationFlag.load(ordering: .relaxed) else { return }
        violationCause = cause
        violationFlag.store(true, ordering: .releasing)
    }
}
