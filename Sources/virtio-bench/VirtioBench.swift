import VirtioCore
import ArgumentParser

@main
struct VirtioBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtio-bench",
        abstract: "Helpers for Scripts/bench-vs-dpdk.sh, and measurements of our own (benchmarks, not tests).",
        subcommands: [CoreLatency.self, InterruptLatency.self, SessionSetup.self, IPSink.self])
}
