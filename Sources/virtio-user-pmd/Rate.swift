/// Packets and bytes over an interval, in the units every report prints: millions of packets
/// per second, and gigabits per second of frame bytes (no FCS, preamble or gap).
struct Rate {
    let mpps: Double
    let gbps: Double

    init(packets: UInt64, bytes: UInt64 = 0, seconds: Double) {
        let seconds = max(seconds, 1e-9)
        mpps = Double(packets) / seconds / 1e6
        gbps = Double(bytes) * 8 / seconds / 1e9
    }

    /// Over `nanoseconds` of the monotonic clock.
    init(packets: UInt64, bytes: UInt64 = 0, nanoseconds: UInt64) {
        self.init(packets: packets, bytes: bytes, seconds: Double(nanoseconds) / 1e9)
    }
}
