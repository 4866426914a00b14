import VirtioCore
import Synchronization
import VirtioUser

/// What a forwarding run measured.
struct ForwardResult {
    /// Seconds of forwarding (the drain afterwards not included).
    var seconds: Double
    /// Counters at the end of forwarding, before the drain.
    var atEnd: VirtioUserDevice.Statistics
    /// Received frames the forwarders freed because transmit had no room (io, macswap).
    var forwardDrops: UInt64
    /// With `--verify`: received frames found intact and corrupt.
    var verdicts: FrameCheck.Verdicts?
}

/// Runs the forwarding loops on `--threads` threads (never on Swift's cooperative pool), each
/// polling its share of the queue pairs, while the calling thread prints the stats lines and
/// ends the run.
struct Forwarder {
    let device: VirtioUserDevice
    let options: VirtioUserPMD

    /// Shared by the loops and the coordinating thread.
    private final class Shared: Sendable {
        let stopping = Atomic<Bool>(false)
        let forwardDrops = Atomic<UInt64>(0)
        let intact = Atomic<UInt64>(0)
        let corrupt = Atomic<UInt64>(0)
    }

    func run() throws(VirtioError) -> ForwardResult {
        let shared = Shared()
        let template = FrameTemplate(
            source: device.macAddress, destination: MACAddress(options.peerMAC) ?? .randomLocal(),
            frameLength: options.pktSize)
        let loop = QueueLoop(
            device: device, mode: options.forwardMode, burst: options.burst, txFirst: options.txFirst,
            template: template, rxWait: options.rxWait, verify: options.verify)
        let cpus = options.cpu
        var threads: [DedicatedThread] = []
        defer {
            shared.stopping.store(true, ordering: .relaxed)
            for thread in threads { thread.join() }
        }
        let threadCount = options.threads ?? device.queuePairCount
        for index in 0..<threadCount {
            // Thread t polls pairs t, t + T, t + 2T, …
            let queues = Array(stride(from: index, to: device.queuePairCount, by: threadCount))
            let cpu = index < cpus.count ? cpus[index] : nil
            threads.append(try DedicatedThread(name: "pmd-fwd-\(index)") {
                if let cpu {
                    do throws(VirtioError) { try DedicatedThread.pinCurrentThread(to: cpu) } catch {
                        Console.error("virtio-user-pmd: warning: forwarding thread \(index) not pinned: \(error)")
                    }
                }
                let outcome = loop.run(queues: queues, stopping: shared.stopping)
                shared.forwardDrops.add(outcome.forwardDrops, ordering: .relaxed)
                shared.intact.add(outcome.verdicts.intact, ordering: .relaxed)
                shared.corrupt.add(outcome.verdicts.corrupt, ordering: .relaxed)
            })
        }

        let start = MonotonicClock.nanoseconds()
        let deadline = MonotonicClock.deadline(MonotonicClock.nanoseconds(seconds: options.duration), after: start)
        // --json keeps stdout for the JSON summary alone.
        var stats = PeriodicSchedule(period: options.json ? 0 : MonotonicClock.nanoseconds(seconds: options.statsPeriod), start: start)
        var last = (time: start, stats: device.statistics)
        var progress = ProgressLine(enabled: options.showsProgress, start: start, duration: options.duration, stats: last.stats)
        var now = start
        while true {
            now = MonotonicClock.nanoseconds()
            if now >= deadline || interrupted.load(ordering: .relaxed) { break }
            // Once per due period, however many a pause (SIGSTOP, a frozen cgroup) skipped.
            if stats.isDue(now: now) {
                let current = device.statistics
                progress.clear()
                printStatsLine(elapsed: now - start, interval: now - last.time, from: last.stats, to: current)
                last = (now, current)
            }
            progress.update(now: now, device: device)
            let wake = min(deadline, stats.next)
            MonotonicClock.sleep(milliseconds: Int(min(10, max(1, MonotonicClock.nanoseconds(until: wake, from: now) / 1_000_000))))
        }
        progress.finish()
        let atEnd = device.statistics
        shared.stopping.store(true, ordering: .relaxed)
        for thread in threads { thread.join() }
        threads = []
        return ForwardResult(
            seconds: Double(now - start) / 1e9, atEnd: atEnd,
            forwardDrops: shared.forwardDrops.load(ordering: .relaxed),
            verdicts: options.verify
                ? FrameCheck.Verdicts(intact: shared.intact.load(ordering: .relaxed), corrupt: shared.corrupt.load(ordering: .relaxed))
                : nil)
    }

    private func printStatsLine(elapsed: UInt64, interval: UInt64, from a: VirtioUserDevice.Statistics, to b: VirtioUserDevice.Statistics) {
        let link = device.linkState
        let txMpps = Rate(packets: b.tx.packets - a.tx.packets, nanoseconds: interval).mpps
        let rxMpps = Rate(packets: b.rx.packets - a.rx.packets, nanoseconds: interval).mpps
        print("  \(format(Double(elapsed) / 1e9, 1))s  TX \(format(txMpps, 2)) Mpps  RX \(format(rxMpps, 2)) Mpps  "
              + "tx=\(b.tx.packets) rx=\(b.rx.packets) ring-full=\(b.tx.ringFull) drops=\(b.tx.drops + b.rx.drops) errors=\(b.tx.errors + b.rx.errors)"
              + (link == .up ? "" : "  link \(link)"))
    }
}

/// The polling loop of one queue pair.
struct QueueLoop: Sendable {
    let device: VirtioUserDevice
    let mode: ForwardMode
    let burst: Int
    let txFirst: Bool
    let template: FrameTemplate
    /// Milliseconds a receive may sleep on the call notification (0: poll).
    let rxWait: Int
    /// `--verify`: stamp what txonly sends, check what arrives.
    let verify: Bool
    /// CPU pause hints after a transmit that found the ring full.
    static let fullRingPauses = 16

    /// What one loop's pairs added up to.
    struct Outcome {
        /// Frames freed because transmit had no room.
        var forwardDrops: UInt64 = 0
        /// With `verify`: what arrived, intact or not.
        var verdicts = FrameCheck.Verdicts()
    }

    /// Per pair: its bursts and the next sequence number to stamp.
    private struct PairState {
        let tx: PacketBurst
        let rx: PacketBurst
        var sequence: UInt64 = 0
    }

    /// Forwards on `queues` in turn until `stopping`, then drains.
    func run(queues: [Int], stopping: borrowing Atomic<Bool>) -> Outcome {
        var outcome = Outcome()
        var pairs = queues.map { _ in PairState(tx: PacketBurst(capacity: burst), rx: PacketBurst(capacity: burst)) }
        if txFirst && (mode == .io || mode == .macswap) {
            for (slot, queue) in queues.enumerated() {
                generate(into: pairs[slot].tx, queue: queue, sequence: &pairs[slot].sequence)
                device.transmit(pairs[slot].tx, queue: queue)
                device.release(pairs[slot].tx, queue: queue)
            }
        }
        var iterations = 0
        while true {
            for slot in 0..<queues.count {
                forwardOnce(queue: queues[slot], pair: &pairs[slot], outcome: &outcome)
            }
            iterations &+= 1
            // One relaxed load every 64 rounds (every round when rounds may sleep).
            if (iterations & 63 == 0 || rxWait > 0) && stopping.load(ordering: .relaxed) { break }
        }
        for slot in 0..<queues.count {
            device.release(pairs[slot].tx, queue: queues[slot])
            drain(pairs[slot].rx, queue: queues[slot], verdicts: &outcome.verdicts)
        }
        return outcome
    }

    /// One burst of the forward mode on pair `queue`.
    @inline(__always)
    private func forwardOnce(queue: Int, pair: inout PairState, outcome: inout Outcome) {
        let rxBurst = pair.rx
        switch mode {
        case .txonly:
            generate(into: pair.tx, queue: queue, sequence: &pair.sequence)
            // A full ring: back off a moment instead of re-reading the used index the
            // back-end is writing (the spin competes with it for that cache line). It frees in
            // the back-end's bursts; one PAUSE came back too soon (16 measured faster).
            if device.transmit(pair.tx, queue: queue) == 0 { SpinWait.relax(times: Self.fullRingPauses) }
            device.receive(into: rxBurst, queue: queue)
            if verify { FrameCheck.check(rxBurst, into: &outcome.verdicts) }
            device.release(rxBurst, queue: queue)
        case .rxonly:
            receive(into: rxBurst, queue: queue)
            if verify { FrameCheck.check(rxBurst, into: &outcome.verdicts) }
            device.release(rxBurst, queue: queue)
        case .io, .macswap:
            if receive(into: rxBurst, queue: queue) > 0 {
                if verify { FrameCheck.check(rxBurst, into: &outcome.verdicts) }
                if mode == .macswap { swapMACs(rxBurst) }
                device.transmit(rxBurst, queue: queue)
                outcome.forwardDrops &+= UInt64(rxBurst.count)
                device.release(rxBurst, queue: queue)
            }
        }
    }

    /// Polls, or with `--rx-wait` sleeps on the call notification while nothing has arrived.
    @inline(__always)
    @discardableResult
    private func receive(into burst: PacketBurst, queue: Int) -> Int {
        rxWait > 0 ? device.receive(into: burst, queue: queue, timeoutMilliseconds: rxWait) : device.receive(into: burst, queue: queue)
    }

    /// Fills `burst` up to capacity with fresh frames (frames still unsent from the last burst
    /// keep their contents); with `verify`, stamps each with the next sequence number.
    private func generate(into burst: PacketBurst, queue: Int, sequence: inout UInt64) {
        let first = burst.count
        let perFrame = template.buffersPerFrame
        if perFrame > 1 { return generateChained(into: burst, queue: queue, sequence: &sequence) }
        let added = device.allocate(into: burst, count: burst.space, queue: queue)
        template.bytes.withUnsafeBytes { header in
            for i in first..<(first + added) {
                var packet = burst[i]
                packet.data.copyMemory(from: header.baseAddress!, byteCount: header.count)
                packet.length = template.frameLength
                burst[i] = packet
            }
        }
        if verify {
            for i in first..<(first + added) {
                FrameCheck.stamp(sequence, burst: burst, frameAt: i)
                sequence &+= 1
            }
        }
    }

    /// `generate` for frames longer than one buffer: each a chain of `buffersPerFrame` entries.
    private func generateChained(into burst: PacketBurst, queue: Int, sequence: inout UInt64) {
        let first = burst.count
        let perFrame = template.buffersPerFrame
        // Whole frames only: no more than the pool holds (only this thread takes from it).
        let frames = min(burst.space, device.availableBuffers(queue: queue)) / perFrame
        guard frames > 0 else { return }
        let added = device.allocate(into: burst, count: frames * perFrame, queue: queue)
        guard added == frames * perFrame else {
            // Cannot happen (see above); a half-built chain must not go out.
            device.release(burst, queue: queue)
            return
        }
        let room = VirtioUserDevice.maximumFrameLength
        template.bytes.withUnsafeBytes { header in
            for frame in 0..<frames {
                let start = first + frame * perFrame
                var left = template.frameLength
                for i in start..<(start + perFrame) {
                    var packet = burst[i]
                    packet.length = min(left, room)
                    packet.segments = i == start ? UInt16(perFrame) : 0
                    left -= packet.length
                    burst[i] = packet
                }
                burst[start].data.copyMemory(from: header.baseAddress!, byteCount: header.count)
                if verify {
                    FrameCheck.stamp(sequence, burst: burst, frameAt: start)
                    sequence &+= 1
                }
            }
        }
    }

    private func swapMACs(_ burst: PacketBurst) {
        for i in 0..<burst.count {
            let data = burst[i].data
            let destination = data.loadUnaligned(as: (UInt32, UInt16).self)
            let source = (data + 6).loadUnaligned(as: (UInt32, UInt16).self)
            data.storeBytes(of: source.0, as: UInt32.self)
            (data + 4).storeBytes(of: source.1, as: UInt16.self)
            (data + 6).storeBytes(of: destination.0, as: UInt32.self)
            (data + 10).storeBytes(of: destination.1, as: UInt16.self)
        }
    }

    /// After forwarding: keep receiving (and freeing) until what this pair sent has come back
    /// or nothing has arrived for 200 ms, so the summary counts frames still in flight.
    private func drain(_ burst: PacketBurst, queue: Int, verdicts: inout FrameCheck.Verdicts) {
        let sent = device.statistics.queuePairs[queue].tx.packets
        var quietSince = MonotonicClock.nanoseconds()
        let limit = quietSince + 2_000_000_000
        while true {
            let now = MonotonicClock.nanoseconds()
            if device.receive(into: burst, queue: queue) > 0 {
                if verify { FrameCheck.check(burst, into: &verdicts) }
                device.release(burst, queue: queue)
                quietSince = now
            }
            if mode == .txonly && device.statistics.queuePairs[queue].rx.packets >= sent { return }
            if now - quietSince > 200_000_000 || now > limit { return }
        }
    }
}

/// Fixed-point formatting without Foundation.
func format(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    let whole = Int(scaled / scale)
    let fraction = Int(scaled) - whole * Int(scale)
    var text = (value < 0 ? "-" : "") + String(whole)
    if decimals > 0 {
        let digits = String(fraction)
        text += "." + String(repeating: "0", count: decimals - digits.count) + digits
    }
    return text
}
