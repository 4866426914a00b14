import VirtioCore
import Synchronization

/// Counters of a back-end, over all the connections it served.
public struct BackendStatistics: Sendable, Equatable {
    /// Frames taken from front-ends' transmit queues.
    public var framesReceived: UInt64 = 0
    /// Bytes of those frames (without the virtio-net header).
    public var bytesReceived: UInt64 = 0
    /// Frames put on front-ends' receive queues.
    public var framesSent: UInt64 = 0
    /// Frames dropped: too large for the receive buffers offered, or (tap mode) refused by the
    /// kernel or too large to read whole from the TAP.
    public var drops: UInt64 = 0
    /// Connections accepted.
    public var connections: UInt64 = 0
    /// Connections closed because the front-end broke the protocol.
    public var protocolErrors: UInt64 = 0
    /// The reason the last connection ended with an error, if any.
    public var lastError: VirtioError?
    /// Indirect descriptor tables followed (VIRTIO_RING_F_INDIRECT_DESC).
    public var indirectTables: UInt64 = 0
    /// Frames taken from each queue pair's transmit ring, by pair number (as many entries as
    /// the back-end serves pairs).
    public var framesReceivedByQueuePair: [UInt64] = []
    /// Frames put on each queue pair's receive ring, by pair number.
    public var framesSentByQueuePair: [UInt64] = []
}

/// Shared counters: written by the serving thread once per burst, read by anyone.
package final class BackendCounters: Sendable {
    /// One queue pair's counters.
    final class Pair: Sendable {
        let framesReceived = Atomic<UInt64>(0)
        let framesSent = Atomic<UInt64>(0)
    }
    let pairs: [Pair]
    let framesReceived = Atomic<UInt64>(0)
    let bytesReceived = Atomic<UInt64>(0)
    let framesSent = Atomic<UInt64>(0)
    let drops = Atomic<UInt64>(0)
    let connections = Atomic<UInt64>(0)
    let protocolErrors = Atomic<UInt64>(0)
    let indirectTables = Atomic<UInt64>(0)
    let lastError = Locked<VirtioError?>(nil)

    package init(queuePairs: Int) {
        pairs = (0..<queuePairs).map { _ in Pair() }
    }

    @inline(__always)
    static func add(_ counter: borrowing Atomic<UInt64>, _ value: Int) {
        guard value != 0 else { return }
        counter.store(counter.load(ordering: .relaxed) &+ UInt64(value), ordering: .relaxed)
    }

    /// Adds one burst's counts on queue pair `pair`: frames taken from its transmit ring (and
    /// their bytes), frames put on its receive ring, frames dropped.
    @inline(__always)
    func addBurst(pair: Int, taken: Int, bytes: Int, sent: Int = 0, dropped: Int = 0) {
        let pairCounters = pairs[pair]
        Self.add(framesReceived, taken)
        Self.add(pairCounters.framesReceived, taken)
        Self.add(bytesReceived, bytes)
        Self.add(framesSent, sent)
        Self.add(pairCounters.framesSent, sent)
        Self.add(drops, dropped)
    }

    var snapshot: BackendStatistics {
        BackendStatistics(
            framesReceived: framesReceived.load(ordering: .relaxed),
            bytesReceived: bytesReceived.load(ordering: .relaxed),
            framesSent: framesSent.load(ordering: .relaxed),
            drops: drops.load(ordering: .relaxed),
            connections: connections.load(ordering: .relaxed),
            protocolErrors: protocolErrors.load(ordering: .relaxed),
            lastError: lastError.withLock { $0 },
            indirectTables: indirectTables.load(ordering: .relaxed),
            framesReceivedByQueuePair: pairs.map { $0.framesReceived.load(ordering: .relaxed) },
            framesSentByQueuePair: pairs.map { $0.framesSent.load(ordering: .relaxed) })
    }
}
