import Synchronization
import VirtioUser

/// What a forwarding run measured.
struct ForwardResult {
    /// Seconds of forwarding (the drain afterwards not included).
    var seconds: Double
    /// Counters at the end of forwarding, before the drain.
    var atEnd: VirtioUserDevice.Statistics
    /// Received frames the forwarder freed because transmit had no room (io, macswap).
    var forwardDrops: UInt64
}

/// The polling loop: runs on the calling (main) thread, never on Swift's cooperative pool.
struct Forwarder {
    let device: VirtioUserDevice
    let options: VirtioUserPMD

    func run() -> ForwardResult {
        let txBurst = PacketBurst(capacity: options.burst)
        let rxBurst = PacketBurst(capacity: options.burst)
        let template = FrameTemplate(
            source: device.macAddress, destination: MACAddress(options.peerMAC) ?? .randomLocal(),
            frameLength: options.pktSize)
        var forwardDrops: UInt64 = 0
        let start = MonotonicClock.nanoseconds()
        let deadline = start + UInt64(options.duration * 1e9)
        let period = UInt64(options.statsPeriod * 1e9)
        var nextStats = period > 0 ? start + period : UInt64.max
        var last = (time: start, stats: device.statistics)

        if options.txFirst && (options.forwardMode == .io || options.forwardMode == .macswap) {
            generate(into: txBurst, template: template)
            device.transmit(txBurst)
            device.release(txBurst)
        }
        // Option values are read once: an ArgumentParser property read per burst costs more than
        // the burst itself.
        let mode = options.forwardMode
        var iterations = 0
        var now = start
        while true {
            switch mode {
            case .txonly:
                generate(into: txBurst, template: template)
                // A full ring: back off a moment instead of re-reading the used index the
                // back-end is writing (the spin competes with it for that cache line).
                if device.transmit(txBurst) == 0 { SpinWait.relax() }
                device.receive(into: rxBurst)
                device.release(rxBurst)
            case .rxonly:
                device.receive(into: rxBurst)
                device.release(rxBurst)
            case .io, .macswap:
                if device.receive(into: rxBurst) > 0 {
                    if mode == .macswap { swapMACs(rxBurst) }
                    device.transmit(rxBurst)
                    forwardDrops &+= UInt64(rxBurst.count)
                    device.release(rxBurst)
                }
            }
            iterations &+= 1
            guard iterations & 63 == 0 else { continue }
            now = MonotonicClock.nanoseconds()
            if now >= deadline || interrupted.load(ordering: .relaxed) { break }
            if now >= nextStats {
                let stats = device.statistics
                printStatsLine(elapsed: now - start, interval: now - last.time, from: last.stats, to: stats)
                last = (now, stats)
                nextStats += period
            }
        }
        let atEnd = device.statistics
        device.release(txBurst)
        drain(rxBurst, expecting: atEnd.tx.packets)
        return ForwardResult(seconds: Double(now - start) / 1e9, atEnd: atEnd, forwardDrops: forwardDrops)
    }

    /// Fills `burst` up to capacity with fresh frames (buffers still unsent from the last burst
    /// keep their contents).
    private func generate(into burst: PacketBurst, template: FrameTemplate) {
        let first = burst.count
        let added = device.allocate(into: burst, count: burst.space)
        template.bytes.withUnsafeBytes { header in
            for i in first..<(first + added) {
                var packet = burst[i]
                packet.data.copyMemory(from: header.baseAddress!, byteCount: header.count)
                packet.length = template.frameLength
                burst[i] = packet
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

    /// After forwarding: keep receiving (and freeing) until what was sent has come back or
    /// nothing has arrived for 200 ms, so the summary counts frames still in flight.
    private func drain(_ burst: PacketBurst, expecting sent: UInt64) {
        let isTxonly = options.forwardMode == .txonly
        var quietSince = MonotonicClock.nanoseconds()
        let limit = quietSince + 2_000_000_000
        while true {
            let now = MonotonicClock.nanoseconds()
            if device.receive(into: burst) > 0 {
                device.release(burst)
                quietSince = now
            }
            if isTxonly && device.statistics.rx.packets >= sent { return }
            if now - quietSince > 200_000_000 || now > limit { return }
        }
    }

    private func printStatsLine(elapsed: UInt64, interval: UInt64, from a: VirtioUserDevice.Statistics, to b: VirtioUserDevice.Statistics) {
        let link = device.linkState
        let seconds = Double(interval) / 1e9
        let txMpps = Double(b.tx.packets - a.tx.packets) / seconds / 1e6
        let rxMpps = Double(b.rx.packets - a.rx.packets) / seconds / 1e6
        print("  \(format(Double(elapsed) / 1e9, 1))s  TX \(format(txMpps, 2)) Mpps  RX \(format(rxMpps, 2)) Mpps  "
              + "tx=\(b.tx.packets) rx=\(b.rx.packets) ring-full=\(b.tx.ringFull) drops=\(b.tx.drops + b.rx.drops) errors=\(b.tx.errors + b.rx.errors)"
              + (link == .up ? "" : "  link \(link)"))
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
