/// A reusable, caller-owned container of up to `capacity` packet buffers: what one burst of
/// receive or transmit works on.
///
/// Create one per polling thread and reuse it: its storage is allocated once, so bursts
/// allocate nothing. Not thread-safe.
public final class PacketBurst {
    @usableFromInline let storage: UnsafeMutablePointer<PacketBuffer>
    /// Most buffers it holds.
    public let capacity: Int
    /// Buffers it holds now (the first `count` entries).
    @inlinable public var count: Int { held }
    @exclusivity(unchecked) @usableFromInline var held: Int

    /// Creates an empty burst holding at most `capacity` buffers (1…4096).
    public init(capacity: Int = 32) {
        self.capacity = min(max(capacity, 1), 4096)
        storage = .allocate(capacity: self.capacity)
        held = 0
    }

    deinit { storage.deallocate() }

    /// True when it holds nothing.
    @inlinable public var isEmpty: Bool { count == 0 }
    /// Room left.
    @inlinable public var space: Int { capacity - count }

    /// The `index`-th buffer (0 ≤ index < count).
    @inlinable
    public subscript(index: Int) -> PacketBuffer {
        get {
            precondition(index >= 0 && index < count, "PacketBurst index \(index) out of 0..<\(count)")
            return storage[index]
        }
        set {
            precondition(index >= 0 && index < count, "PacketBurst index \(index) out of 0..<\(count)")
            storage[index] = newValue
        }
    }

    @inlinable
    func append(_ buffer: PacketBuffer) {
        storage[held] = buffer
        held &+= 1
    }

    /// Drops the first `n` entries, moving the rest to the front.
    @inlinable
    func removeFirst(_ n: Int) {
        guard n > 0 else { return }
        let rest = count - n
        if rest > 0 { storage.update(from: storage + n, count: rest) }
        held = rest
    }

    /// Forgets all entries without releasing them (after the caller handed them elsewhere).
    @inlinable
    func removeAll() { held = 0 }
}
