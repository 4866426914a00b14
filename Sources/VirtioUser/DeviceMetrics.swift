import CoreMetrics
import VirtioCore

/// Reports a device's per-queue counters to swift-metrics, on demand: call ``update()`` when
/// your metrics backend is about to be read (or on a timer). The data path keeps its own plain
/// counters and pays nothing for this.
///
/// Counters, each with dimensions `queue` (the pair number) and `direction` (`rx` or `tx`):
/// `<prefix>_packets`, `<prefix>_bytes`, `<prefix>_drops`, `<prefix>_errors`. A gauge
/// `<prefix>_link_up` is 1 while frames can flow, else 0.
public final class VirtioUserDeviceMetrics: Sendable {
    private let device: VirtioUserDevice
    private let feed: CounterFeed
    private let linkUp: Gauge

    /// The metrics of `device`, created from `factory` (by default the one
    /// `MetricsSystem.bootstrap` installed).
    public init(device: VirtioUserDevice, prefix: String = "virtio_user", factory: any MetricsFactory = MetricsSystem.factory) {
        self.device = device
        var metrics: [(label: String, dimensions: [(String, String)])] = []
        for queue in 0..<device.queuePairCount {
            for direction in ["rx", "tx"] {
                for name in Self.names {
                    metrics.append(("\(prefix)_\(name)", [("queue", String(queue)), ("direction", direction)]))
                }
            }
        }
        feed = CounterFeed(metrics, factory: factory)
        linkUp = Gauge(label: "\(prefix)_link_up", dimensions: [], factory: factory)
    }

    private static let names = ["packets", "bytes", "drops", "errors"]

    /// Reads the device's statistics and link state and reports them.
    public func update() {
        var totals: [UInt64] = []
        for pair in device.statistics.queuePairs {
            for queue in [pair.rx, pair.tx] {
                totals += [queue.packets, queue.bytes, queue.drops, queue.errors]
            }
        }
        feed.update(totals)
        linkUp.record(device.linkState == .up ? 1 : 0)
    }
}
