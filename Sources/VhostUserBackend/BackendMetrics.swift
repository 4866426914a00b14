import CoreMetrics
import VirtioCore

/// Reports a back-end's counters to swift-metrics, on demand (``update()``); forwarding pays
/// nothing for it.
///
/// Counters: `<prefix>_frames` with dimensions `queue` and `direction` (`received` from the
/// front-ends' transmit rings, `sent` to their receive rings), and `<prefix>_bytes_received`,
/// `<prefix>_drops`, `<prefix>_connections`, `<prefix>_protocol_errors` over all queues.
public final class VhostUserBackendMetrics: Sendable {
    private let backend: VhostUserBackend
    private let feed: CounterFeed

    /// The metrics of `backend`, created from `factory` (by default the one
    /// `MetricsSystem.bootstrap` installed).
    public init(backend: VhostUserBackend, prefix: String = "vhost_user_backend", factory: any MetricsFactory = MetricsSystem.factory) {
        self.backend = backend
        var metrics: [(label: String, dimensions: [(String, String)])] = [
            ("\(prefix)_bytes_received", []), ("\(prefix)_drops", []),
            ("\(prefix)_connections", []), ("\(prefix)_protocol_errors", []),
        ]
        for queue in 0..<backend.configuration.queuePairs {
            for direction in ["received", "sent"] {
                metrics.append(("\(prefix)_frames", [("queue", String(queue)), ("direction", direction)]))
            }
        }
        feed = CounterFeed(metrics, factory: factory)
    }

    /// Reads the back-end's statistics and reports them.
    public func update() {
        let stats = backend.statistics
        var totals = [stats.bytesReceived, stats.drops, stats.connections, stats.protocolErrors]
        for queue in 0..<backend.configuration.queuePairs {
            totals.append(queue < stats.framesReceivedByQueuePair.count ? stats.framesReceivedByQueuePair[queue] : 0)
            totals.append(queue < stats.framesSentByQueuePair.count ? stats.framesSentByQueuePair[queue] : 0)
        }
        feed.update(totals)
    }
}
