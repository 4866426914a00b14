#if canImport(Glibc)
import VirtioCore
import Glibc
#endif
import ArgumentParser
import VhostUserBackend
import VirtioUser

/// What a new session costs the device: `stop()` then `start()` against an embedded loopback
/// back-end that stays up, timed around `start()` (connect, negotiation, and the renewal of the
/// memory and eventfds the last session shared).
struct SessionSetup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session-setup",
        abstract: "Time of the device's start() after a stop() (a new session, memory renewed) against an embedded loopback back-end.")

    @Option(help: "Sessions to time; the median is printed.") var sessions: Int = 15
    @Option(name: .customLong("pool-size"), help: "Packet buffers per queue pair (default: the device's).") var poolSize: Int?
    @Flag(help: "2 MiB hugepage memory (reserve twice the region: a renewal holds old and new at once).") var hugepages = false

    func validate() throws {
        guard sessions > 0 else { throw ValidationError("--sessions must be positive.") }
        if let poolSize, poolSize <= 0 { throw ValidationError("--pool-size must be positive.") }
    }

    func run() throws {
        try withEmbeddedLoopback({ configuration in
            configuration.poolSize = poolSize
            if hugepages {
                configuration.memory = .hugepages2M
                configuration.fallbackToNormalPages = false
            }
        }) { device in try measure(device) }
    }

    private func measure(_ device: VirtioUserDevice) throws {
        var samples: [UInt64] = []
        for _ in 0..<sessions {
            device.stop()
            let start = MonotonicClock.nanoseconds()
            try device.start()
            samples.append(MonotonicClock.nanoseconds() - start)
        }
        samples.sort()
        func ms(_ value: UInt64) -> String { "\(value / 1_000_000).\(String(value / 10_000 % 100).leftPadded(to: 2))" }
        print("session-setup-ms \(ms(samples[samples.count / 2])) min \(ms(samples[0])) max \(ms(samples[samples.count - 1])) memory \(device.memoryBacking) \(device.sharedMemoryBytes) bytes")
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
