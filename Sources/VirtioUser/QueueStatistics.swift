import VirtioCore
import Synchronization

/// Counters of one queue, as read at one moment.
///
/// Balance on the transmit side: every frame `transmit` accepted is counted in `packets`, and
/// ends up in `completed` (the back-end returned it), in `drops` (lost because the back-end went
/// away or the device stopped before completing it), or still in flight. With the device
/// stopped nothing is in flight: `packets == completed + drops` (when no frame was refused for
/// its length, which counts in `drops` only).
public struct QueueStatistics: Sendable, Equatable {
    /// Frames moved: accepted by `transmit`, or handed out by `receive`.
    public var packets: UInt64 = 0
    /// Frame bytes moved (without the virtio-net header).
    public var bytes: UInt64 = 0
    /// Frames lost: accepted but never completed (transmit), refused for a length the buffer
    /// cannot hold (transmit: the caller's); received in more buffers than the caller's burst
    /// can ever hold (receive: see ``VirtioUserDevice/receive(into:queue:)``).
    public var drops: UInt64 = 0
    /// Errors by the back-end seen on this queue: ring-protocol violations (the ring stops at
    /// the first) and, on receive, frames whose used length their buffers cannot hold (longer
    /// than a buffer, or shorter than the header; Linux's rx_length_errors), which are dropped.
    /// The first length error of a session is logged.
    public var errors: UInt64 = 0
    /// Notifications sent to the back-end (the rest were suppressed because it polls).
    public var kicks: UInt64 = 0
    /// Transmit: frames `transmit` left with the caller because the ring was full.
    public var ringFull: UInt64 = 0
    /// Receive: descriptors left empty at refill because the pool had no buffer (DPDK's
    /// rx_nombuf).
    public var noBuffers: UInt64 = 0
    /// Transmit: frames the back-end returned through the used ring (reclaimed lazily, so this
    /// trails `packets` while frames are in flight).
    public var completed: UInt64 = 0
    /// Receive, interrupt mode: waits that the back-end's call notification ended (the rest
    /// found frames first or ran out of time).
    public var wakeups: UInt64 = 0

    public init(packets: UInt64 = 0, bytes: UInt64 = 0, drops: UInt64 = 0, errors: UInt64 = 0,
                kicks: UInt64 = 0, ringFull: UInt64 = 0, noBuffers: UInt64 = 0, completed: UInt64 = 0,
                wakeups: UInt64 = 0) {
        self.packets = packets
        self.bytes = bytes
        self.drops = drops
        self.errors = errors
        self.kicks = kicks
        self.ringFull = ringFull
        self.noBuffers = noBuffers
        self.completed = completed
        self.wakeups = wakeups
    }
}

extension QueueStatistics {
    /// Counter by counter: the sum of two queues' counters.
    public static func + (a: QueueStatistics, b: QueueStatistics) -> QueueStatistics {
        QueueStatistics(
            packets: a.packets &+ b.packets, bytes: a.bytes &+ b.bytes, drops: a.drops &+ b.drops,
            errors: a.errors &+ b.errors, kicks: a.kicks &+ b.kicks, ringFull: a.ringFull &+ b.ringFull,
            noBuffers: a.noBuffers &+ b.noBuffers, completed: a.completed &+ b.completed,
            wakeups: a.wakeups &+ b.wakeups)
    }
}

/// Per-queue counters written by the queue's thread (or the control path while the queue is
/// quiesced) and read by anyone. Updated once per burst with relaxed load + store (a single
/// writer), so the hot path pays no locked operation.
@usableFromInline
final class QueueCounters: Sendable {
    @usableFromInline let packets = Atomic<UInt64>(0)
    @usableFromInline let bytes = Atomic<UInt64>(0)
    @usableFromInline let drops = Atomic<UInt64>(0)
    @usableFromInline let errors = Atomic<UInt64>(0)
    @usableFromInline let kicks = Atomic<UInt64>(0)
    @usableFromInline let ringFull = Atomic<UInt64>(0)
    @usableFromInline let noBuffers = Atomic<UInt64>(0)
    @usableFromInline let completed = Atomic<UInt64>(0)
    @usableFromInline let wakeups = Atomic<UInt64>(0)

    init() {}

    /// Adds `value` to `counter` (single writer: no read-modify-write instruction needed).
    @inlinable
    static func add(_ counter: borrowing Atomic<UInt64>, _ value: Int) {
        counter.store(counter.load(ordering: .relaxed) &+ UInt64(truncatingIfNeeded: value), ordering: .relaxed)
    }

    var snapshot: QueueStatistics {
        QueueStatistics(
            packets: packets.load(ordering: .relaxed), bytes: bytes.load(ordering: .relaxed),
            drops: drops.load(ordering: .relaxed), errors: errors.load(ordering: .relaxed),
            kicks: kicks.load(ordering: .relaxed), ringFull: ringFull.load(ordering: .relaxed),
            noBuffers: noBuffers.load(ordering: .relaxed), completed: completed.load(ordering: .relaxed),
            wakeups: wakeups.load(ordering: .relaxed))
    }
}
