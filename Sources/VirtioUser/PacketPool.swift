import VirtioCore

/// Fixed-size packet buffers carved from the shared region, with a private free stack.
///
/// Each slot is `headroom + dataRoom` bytes; the frame starts `headroom` bytes in, and the
/// 12-byte virtio-net header sits just before it, so header and frame go in one descriptor.
/// Owned by the thread that owns the queue pair.
///
/// With several queue pairs, each has its own pool, and slot numbers are global: pool `p`
/// owns slots `firstSlot ..< firstSlot + count` of one array of slots. A buffer handed to
/// another pair's pool is recognised as foreign and refused, never adopted.
@usableFromInline
final class PacketPool {
    /// Bytes before the frame: room for the virtio-net header and for prepending headers.
    @usableFromInline static let headroom = 128
    /// Bytes for the frame itself.
    @usableFromInline static let dataRoom = 2048
    @usableFromInline static let slotSize = headroom + dataRoom

    /// Slot 0 of all pools (not necessarily this pool's first slot).
    @usableFromInline let base: UnsafeMutableRawPointer
    /// This pool's first slot.
    @usableFromInline let firstSlot: UInt32
    @usableFromInline let count: Int
    @usableFromInline let freeStack: UnsafeMutablePointer<UInt32>
    @exclusivity(unchecked) @usableFromInline var freeCount: Int
    /// Guards against returning a buffer twice, which would hand one slot to two owners.
    @usableFromInline let isFree: UnsafeMutablePointer<Bool>
    /// Buffers handed back that were not ours or were already free.
    @exclusivity(unchecked) @usableFromInline var invalidReleases: UInt64 = 0

    init(base: UnsafeMutableRawPointer, firstSlot: UInt32 = 0, count: Int) {
        self.base = base
        self.firstSlot = firstSlot
        self.count = count
        freeStack = .allocate(capacity: count)
        isFree = .allocate(capacity: count)
        freeCount = 0
        isFree.initialize(repeating: false, count: count)
        for index in (0..<count).reversed() { push(firstSlot + UInt32(index)) }
    }

    deinit {
        freeStack.deallocate()
        isFree.deallocate()
    }

    static func bytesNeeded(count: Int) -> Int { count * slotSize }

    /// Buffers available now.
    @inlinable var available: Int { freeCount }

    @inlinable
    func dataPointer(slot: UInt32) -> UnsafeMutableRawPointer {
        base + (Int(slot) &* Self.slotSize &+ Self.headroom)
    }

    /// Takes a free buffer, or nil when the pool is empty.
    @inlinable
    func take() -> PacketBuffer? {
        guard freeCount > 0 else { return nil }
        freeCount &-= 1
        let slot = freeStack[freeCount]
        isFree[Int(slot &- firstSlot)] = false
        return PacketBuffer(slot: slot, data: dataPointer(slot: slot), length: 0)
    }

    /// Bytes from `data` to the end of `slot`'s buffer: how long a segment starting there may be.
    @inlinable
    func room(after data: UnsafeMutableRawPointer, slot: UInt32) -> Int {
        data.distance(to: base + (Int(slot) &+ 1) &* Self.slotSize)
    }

    /// Whether `slot` belongs to this pool (wrapping arithmetic: one compare).
    @inlinable
    func owns(slot: UInt32) -> Bool { Int(slot &- firstSlot) < count }

    /// Returns slot `slot` to the pool; refuses (and counts) a slot that is not ours or is
    /// already free.
    @inlinable
    func put(slot: UInt32) {
        guard owns(slot: slot), !isFree[Int(slot &- firstSlot)] else {
            invalidReleases &+= 1
            return
        }
        push(slot)
    }

    @inlinable
    func push(_ slot: UInt32) {
        isFree[Int(slot &- firstSlot)] = true
        freeStack[freeCount] = slot
        freeCount &+= 1
    }
}
