import VirtioCore
import VirtioUser

/// A one-line progress report on stderr, rewritten in place (carriage return) four times a
/// second: elapsed and total time, the rates since the last rewrite, the link.
struct ProgressLine {
    let enabled: Bool
    let start: UInt64
    let duration: Double
    private var last: (time: UInt64, stats: VirtioUserDevice.Statistics)
    private var width = 0

    init(enabled: Bool, start: UInt64, duration: Double, stats: VirtioUserDevice.Statistics) {
        self.enabled = enabled
        self.start = start
        self.duration = duration
        last = (start, stats)
    }

    mutating func update(now: UInt64, device: VirtioUserDevice) {
        guard enabled, now - last.time >= 250_000_000 else { return }
        let stats = device.statistics
        let tx = Rate(packets: stats.tx.packets - last.stats.tx.packets, nanoseconds: now - last.time).mpps
        let rx = Rate(packets: stats.rx.packets - last.stats.rx.packets, nanoseconds: now - last.time).mpps
        let elapsed = Double(now - start) / 1e9
        let percent = min(100, Int(elapsed / duration * 100))
        let link = device.linkState == .up ? "link up" : "link DOWN"
        var text = "  [\(percent)%] \(format(elapsed, 1))/\(format(duration, 1)) s  TX \(format(tx, 2)) Mpps  RX \(format(rx, 2)) Mpps  \(link)"
        // Pad over a longer previous line.
        let length = text.count
        if length < width { text += String(repeating: " ", count: width - length) }
        width = length
        Console.errorRaw("\r" + text)
        last = (now, stats)
    }

    /// Blanks the line (before a stats line is printed, so the two do not mix on a terminal).
    mutating func clear() {
        guard enabled, width > 0 else { return }
        Console.errorRaw("\r" + String(repeating: " ", count: width) + "\r")
        width = 0
    }

    /// Ends the line.
    func finish() {
        guard enabled, width > 0 else { return }
        Console.errorRaw("\n")
    }
}
