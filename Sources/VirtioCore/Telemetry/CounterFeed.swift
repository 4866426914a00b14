import CoreMetrics
import Synchronization

/// swift-metrics counters fed from our own statistics, which only ever grow: each ``update(_:)``
/// adds to every counter what its total grew by since the last one. The data path never touches
/// a metric; an exporter pays only when it asks.
@usableFromInline package final class CounterFeed: Sendable {
    /// One counter and the total it last reported.
    private struct Entry {
        let counter: Counter
        var reported: UInt64 = 0
    }

    private let entries: Mutex<[Entry]>

    /// Counters named `labels[i]` with `dimensions[i]`, created from `factory`.
    @usableFromInline package init(_ metrics: [(label: String, dimensions: [(String, String)])], factory: any MetricsFactory) {
        entries = Mutex(metrics.map { Entry(counter: Counter(label: $0.label, dimensions: $0.dimensions, factory: factory)) })
    }

    /// Reports `totals`, in the order the counters were given (extra or missing totals are
    /// ignored). A total lower than last time (a counter that was reset) restarts from it.
    @usableFromInline package func update(_ totals: [UInt64]) {
        entries.withLock { entries in
            for index in entries.indices where index < totals.count {
                let total = totals[index]
                if total > entries[index].reported {
                    entries[index].counter.increment(by: Int64(clamping: total - entries[index].reported))
                }
                entries[index].reported = total
            }
        }
    }
}
