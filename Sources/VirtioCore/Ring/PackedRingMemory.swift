import CVirtioShim

/// Where the three parts of one packed virtqueue (VIRTIO 1.1 §2.8) sit in memory: the
/// descriptor ring and the two event suppression areas. vhost-user's SET_VRING_ADDR carries
/// them in its descriptor, "available" (driver area) and "used" (device area) fields.
@usableFromInline package struct PackedRingMemory {
    /// Queue size: 1 to ``maximumSize``, not necessarily a power of two.
    @usableFromInline package let size: Int
    /// The descriptor ring (`size` entries), written by both sides.
    @usableFromInline package let descriptors: UnsafeMutablePointer<cvs_pvirtq_desc>
    /// Driver event suppression: the driver says when it wants used-buffer notifications.
    @usableFromInline package let driverEvent: UnsafeMutableRawPointer
    /// Device event suppression: the device says when it wants kicks.
    @usableFromInline package let deviceEvent: UnsafeMutableRawPointer

    /// The largest packed queue size the spec allows.
    @usableFromInline package static let maximumSize = 32768

    /// Creates a view over parts placed by a peer (the back-end's case).
    @usableFromInline package init(size: Int, descriptors: UnsafeMutableRawPointer, driverEvent: UnsafeMutableRawPointer, deviceEvent: UnsafeMutableRawPointer) {
        self.size = size
        self.descriptors = descriptors.assumingMemoryBound(to: cvs_pvirtq_desc.self)
        self.driverEvent = driverEvent
        self.deviceEvent = deviceEvent
    }

    /// True for 1 … 32768.
    @inlinable
    package static func isValidSize(_ size: Int) -> Bool {
        size > 0 && size <= maximumSize
    }

    /// Bytes one ring of `size` entries needs with ``place(at:size:)``'s layout.
    @usableFromInline package static func bytesNeeded(size: Int) -> Int {
        deviceEventOffset(size: size) + 64
    }

    /// Lays a ring out at `base` (64-byte aligned): the descriptors, then each event area on its
    /// own cache line, since each has a different writer.
    @usableFromInline package static func place(at base: UnsafeMutableRawPointer, size: Int) -> PackedRingMemory {
        PackedRingMemory(
            size: size, descriptors: base,
            driverEvent: base + driverEventOffset(size: size),
            deviceEvent: base + deviceEventOffset(size: size))
    }

    private static func driverEventOffset(size: Int) -> Int {
        SharedMemoryRegion.roundUp(cvs_vring_desc_bytes(UInt32(size)), to: 64)
    }

    private static func deviceEventOffset(size: Int) -> Int {
        driverEventOffset(size: size) + 64
    }
}

/// A position in a packed ring: a slot and the wrap counter that goes with it (§2.8.1). Both
/// sides start at slot 0 with the counter at 1, and flip it each time they pass the end.
@usableFromInline
struct PackedRingPosition: Equatable {
    @usableFromInline var slot: Int
    @usableFromInline var wrap: Bool

    @inlinable init(slot: Int, wrap: Bool) {
        self.slot = slot
        self.wrap = wrap
    }

    /// The position `count` slots on (count at most the ring size).
    @inlinable
    func advanced(by count: Int, size: Int) -> PackedRingPosition {
        let next = slot &+ count
        return next >= size ? PackedRingPosition(slot: next &- size, wrap: !wrap) : PackedRingPosition(slot: next, wrap: wrap)
    }

    /// vhost-user's 16-bit form: the slot in bits 0–14, the wrap counter in bit 15.
    @inlinable var encoded: UInt16 { UInt16(truncatingIfNeeded: slot) | (wrap ? 0x8000 : 0) }

    @inlinable init(encoded: UInt16) {
        slot = Int(encoded & 0x7FFF)
        wrap = encoded & 0x8000 != 0
    }

    /// The flags that mark a descriptor available at this position: AVAIL equal to the wrap
    /// counter, USED its inverse.
    @inlinable var availableFlags: UInt16 {
        wrap ? UInt16(CVS_VIRTQ_DESC_F_AVAIL) : UInt16(CVS_VIRTQ_DESC_F_USED)
    }

    /// The flags that mark a descriptor used at this position: AVAIL and USED both equal to
    /// the wrap counter.
    @inlinable var usedFlags: UInt16 {
        wrap ? UInt16(CVS_VIRTQ_DESC_F_AVAIL | CVS_VIRTQ_DESC_F_USED) : 0
    }

    /// True when `flags` say available for this position's wrap counter.
    @inlinable func isAvailable(_ flags: UInt16) -> Bool {
        flags & UInt16(CVS_VIRTQ_DESC_F_AVAIL | CVS_VIRTQ_DESC_F_USED) == availableFlags
    }

    /// True when `flags` say used for this position's wrap counter.
    @inlinable func isUsed(_ flags: UInt16) -> Bool {
        flags & UInt16(CVS_VIRTQ_DESC_F_AVAIL | CVS_VIRTQ_DESC_F_USED) == usedFlags
    }
}

/// The event-suppression test for a packed ring (§2.8.10, VIRTIO_F_EVENT_IDX): the peer asked
/// for a notification when `event` (its off_wrap) was passed; we moved from `old` to `new`.
@inlinable
func packedEventNeeded(event: UInt16, old: PackedRingPosition, new: PackedRingPosition, size: Int) -> Bool {
    // Unwrap all three onto one line that ends at `new`, then the split ring's test applies.
    var oldSlot = old.slot
    var eventSlot = Int(event & 0x7FFF)
    if new.slot <= oldSlot { oldSlot &-= size }
    if (event & 0x8000 != 0) != new.wrap { eventSlot &-= size }
    return RingEvent.needed(
        event: UInt16(truncatingIfNeeded: eventSlot), new: UInt16(truncatingIfNeeded: new.slot),
        old: UInt16(truncatingIfNeeded: oldSlot))
}
