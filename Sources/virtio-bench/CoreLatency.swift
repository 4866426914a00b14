import ArgumentParser
import Synchronization
import VirtioCore

/// One-way core-to-core latency: two threads pinned to two CPUs bounce a counter on one cache
/// line. On the 2-vCPU VMs here it tells a "near" placement (~40 ns) from a "far" one (~200 ns),
/// which changes ring throughput up to 3×, so benchmarks measure it around every run.
struct CoreLatency: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "core-latency",
        abstract: "Measure one-way core-to-core latency (ns) between two CPUs with a cache-line ping-pong.")

    @Option(help: "First CPU.") var first: Int = 0
    @Option(help: "Second CPU.") var second: Int = 1
    @Option(help: "Round trips per sample.") var roundTrips: Int = 20_000
    @Option(help: "Samples; the median is printed.") var samples: Int = 7

    func validate() throws {
        guard roundTrips > 0, samples > 0, first >= 0, second >= 0, first != second else {
            throw ValidationError("Need two different CPUs and positive counts.")
        }
    }

    func run() throws {
        var results: [Double] = []
        for _ in 0..<samples {
            results.append(try measure())
        }
        results.sort()
        let median = results[results.count / 2]
        print("core-latency-ns \(Int(median.rounded())) cpus \(first),\(second) min \(Int(results[0].rounded())) max \(Int(results[results.count - 1].rounded()))")
    }

    /// Nanoseconds per one-way hop, from `roundTrips` round trips.
    private func measure() throws -> Double {
        let line = SharedLine()
        let trips = UInt64(roundTrips)
        let cpu = second
        let responder = try DedicatedThread(name: "c2c-responder") {
            try? DedicatedThread.pinCurrentThread(to: cpu)
            var expected: UInt64 = 1
            while expected < 2 * trips {
                while line.value.load(ordering: .acquiring) != expected {}
                line.value.store(expected + 1, ordering: .releasing)
                expected += 2
            }
        }
        try DedicatedThread.pinCurrentThread(to: first)
        let start = MonotonicClock.nanoseconds()
        var next: UInt64 = 1
        while next < 2 * trips {
            line.value.store(next, ordering: .releasing)
            while line.value.load(ordering: .acquiring) != next + 1 {}
            next += 2
        }
        let elapsed = MonotonicClock.nanoseconds() - start
        responder.join()
        return Double(elapsed) / Double(2 * trips)
    }
}

/// A counter alone on its cache lines (64 bytes of padding on both sides).
private final class SharedLine: Sendable {
    let padding1: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
    let value = Atomic<UInt64>(0)
    let padding2: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
}
