#if canImport(Glibc)
import VirtioCore
import Glibc
#endif
import ArgumentParser
import Dispatch
import VhostUserBackend
import VirtioUser

/// Interrupt mode, measured: how soon a sleeping receive wakes when a frame arrives, and what
/// waiting costs while idle, for the blocking call and the AsyncSequence, against busy polling.
struct InterruptLatency: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "interrupt",
        abstract: "Wake-up latency and idle CPU of interrupt-mode receive (blocking and AsyncSequence) against an embedded loopback back-end.")

    @Option(help: "Round trips per mode.") var rounds: Int = 500
    @Option(name: .customLong("gap-ms"), help: "Idle milliseconds before each round trip (long enough for the back-end to sleep too).") var gap: Int = 5
    @Option(name: .customLong("idle-seconds"), help: "Seconds of idle waiting to measure CPU over.") var idleSeconds: Int = 3

    func validate() throws {
        guard rounds > 0, gap >= 0, idleSeconds > 0 else { throw ValidationError("Positive rounds and idle seconds, a non-negative gap.") }
    }

    func run() throws {
        try withEmbeddedLoopback { device in try measureAll(device) }
    }

    private func measureAll(_ device: VirtioUserDevice) throws {
        print("interrupt mode, \(rounds) round trips of one 64-byte frame after \(gap) ms idle each; loopback back-end in-process")
        print("mode          p50 µs   p99 µs   max µs   idle CPU (waiting thread / whole process) over \(idleSeconds) s")
        let polling = measure(device) { burst in
            while device.receive(into: burst) == 0 {}
        }
        report("busy poll", polling, idle: idleCPU { _ = device.receive(into: PacketBurst(capacity: 1)); spin(seconds: idleSeconds, device) })
        let blocking = measure(device) { burst in
            while device.receive(into: burst, timeoutMilliseconds: 1000) == 0 {}
        }
        report("blocking", blocking, idle: idleCPU {
            _ = device.receive(into: PacketBurst(capacity: 1), timeoutMilliseconds: idleSeconds * 1000)
        })
        let (async, asyncIdle) = measureAsync(device)
        report("async", async, idle: asyncIdle)
    }

    /// Round trips: send one frame, wait for it with `wait`; microseconds each.
    private func measure(_ device: VirtioUserDevice, wait: (PacketBurst) -> Void) -> [Double] {
        let burst = PacketBurst(capacity: 1)
        var samples: [Double] = []
        for _ in 0..<rounds {
            MonotonicClock.sleep(milliseconds: gap)
            let start = MonotonicClock.nanoseconds()
            send(device)
            wait(burst)
            samples.append(Double(MonotonicClock.nanoseconds() - start) / 1000)
            device.release(burst)
        }
        return samples
    }

    private func measureAsync(_ device: VirtioUserDevice) -> ([Double], (Double, Double)) {
        final class Box: @unchecked Sendable { var samples: [Double] = []; var idle = (0.0, 0.0) }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let rounds = self.rounds, gap = self.gap, idleSeconds = self.idleSeconds
        Task {
            var iterator = device.receivedBursts(capacity: 1).makeAsyncIterator()
            for _ in 0..<rounds {
                try? await Task.sleep(nanoseconds: UInt64(gap) * 1_000_000)
                let start = MonotonicClock.nanoseconds()
                send(device)
                _ = await iterator.next()
                box.samples.append(Double(MonotonicClock.nanoseconds() - start) / 1000)
            }
            // Idle: a task waiting on the sequence while nothing arrives, cancelled after a while.
            let process = processCPU()
            let wall = MonotonicClock.nanoseconds()
            let waiter = Task { for await _ in device.receivedBursts(capacity: 1) {} }
            try? await Task.sleep(nanoseconds: UInt64(idleSeconds) * 1_000_000_000)
            waiter.cancel()
            _ = await waiter.value
            let elapsed = Double(MonotonicClock.nanoseconds() - wall)
            // A task has no thread of its own: the whole process is the figure.
            box.idle = (.nan, Double(processCPU() - process) / elapsed * 100)
            done.signal()
        }
        done.wait()
        return (box.samples, box.idle)
    }

    private func idleCPU(_ wait: () -> Void) -> (Double, Double) {
        let thread = threadCPU(), process = processCPU(), wall = MonotonicClock.nanoseconds()
        wait()
        let elapsed = Double(MonotonicClock.nanoseconds() - wall)
        return (Double(threadCPU() - thread) / elapsed * 100, Double(processCPU() - process) / elapsed * 100)
    }

    private func spin(seconds: Int, _ device: VirtioUserDevice) {
        let burst = PacketBurst(capacity: 1)
        let end = MonotonicClock.nanoseconds() + UInt64(seconds) * 1_000_000_000
        while MonotonicClock.nanoseconds() < end { device.receive(into: burst) }
    }

    private func report(_ name: String, _ samples: [Double], idle: (Double, Double)) {
        let sorted = samples.sorted()
        func at(_ q: Double) -> String { pad(String(Int(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))])), 8) }
        let thread = idle.0.isNaN ? "–" : fixed(idle.0) + " %"
        let label = name + String(repeating: " ", count: max(0, 12 - name.count))
        let maximum = pad(String(Int(sorted.last ?? 0)), 8)
        let columns: [String] = [label, at(0.5), at(0.99), maximum, "  \(thread) / \(fixed(idle.1)) %"]
        print(columns.joined(separator: " "))
    }
}

private func send(_ device: VirtioUserDevice) {
    let burst = PacketBurst(capacity: 1)
    device.allocate(into: burst, count: 1)
    guard burst.count == 1 else { return }
    var packet = burst[0]
    packet.length = 64
    burst[0] = packet
    if device.transmit(burst) == 0 { device.release(burst) }
}

private func threadCPU() -> UInt64 { cpuClock(CLOCK_THREAD_CPUTIME_ID) }
private func processCPU() -> UInt64 { cpuClock(CLOCK_PROCESS_CPUTIME_ID) }
private func cpuClock(_ clock: clockid_t) -> UInt64 {
    var time = timespec()
    clock_gettime(clock, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}
private func pad(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
private func fixed(_ value: Double) -> String {
    let scaled = Int((value * 10).rounded())
    return "\(scaled / 10).\(abs(scaled % 10))"
}
