import Synchronization

/// Counters of one queue, as read at one moment.
public struct QueueStatistics: Sendable, Equatable {
    /// Frames moved.
    public var packets: UInt64 = 0
    /// Frame bytes moved (without the virtio-net header).
    public var bytes: UInt64 = 0
    /// Frames not moved for lack of room (TX ring full) or buffers (pool empty on RX refill).
    public var drops: UInt64 = 0
    /// Frames refused as malformed (too long, or a used length the device should not report).
    public var errors: UInt64 = 0
    /// Notifications sent to the back-end (the rest were suppressed because it polls).
    public var kicks: UInt64 = 0

    public init(packets: UInt64 = 0, bytes: UInt64 = 0, drops: UInt64 = 0, errors: UInt64 = 0, kicks: UInt64 = 0) {
        self.kicks = kicks
        self.packets = packets
        self.bytes = bytes
        self.drops = drops
        self.errors = errors
    }
}

/// Per-queue counters written by the queue's thread and read by anyone. Updated once per
/// burst with relaxed load + store (a single writer), so the hot path pays no locked operation.
@usableFromInline
final class QueueCounters: Sendable {
    @usableFromInline let packets = Atomic<UInt64>(0)
    @usableFromInline let bytes = Atomic<UInt64>(0)
    @usableFromInline let drops = Atomic<UInt64>(0)
    @usableFromInline let errors = Atomic<UInt64>(0)
    @usableFromInline let kicks = Atomic<UInt64>(0)

    init() {}

    @inlinable
    func add(packets p: Int, bytes b: Int) {
        packets.store(packets.load(ordering: .relaxed) &+ UInt64(p), ordering: .relaxed)
        bytes.store(bytes.load(ordering: .relaxed) &+ UInt64(b), ordering: .relaxed)
    }

    @inlinable
    func add(drops d: Int) { drops.store(drops.load(ordering: .relaxed) &+ UInt64(d), ordering: .relaxed) }

    @inlinable
    func addKick() { kicks.store(kicks.load(ordering: .relaxed) &+ 1, ordering: .relaxed) }

    @inlinable
    func add(errors e: Int) { errors.store(errors.load(ordering: .relaxed) &+ UInt64(e), ordering: .relaxed) }

    var snapshot: QueueStatistics {
        QueueStatistics(
            packets: packets.load(ordering: .relaxed), bytes: bytes.load(ordering: .relaxed),
            drops: drops.load(ordering: .relaxed), errors: errors.load(ordering: .relaxed),
            kicks: kicks.load(ordering: .relaxed))
    }
}
