/// How long a switch port without receive buffers may hold back the senders of unicast frames
/// for it, before its frames are dropped instead.
///
/// A brief hold turns a receiver's hiccup into back-pressure rather than loss; an unbounded one
/// lets a front-end that posts no buffers stop its senders' traffic to every other port. So a
/// destination holds a sender at most `wait` at a time; after that it is congested and its
/// frames are dropped (and counted) whenever it has no room, until it has gone a second
/// without being found full.
struct DestinationBackPressure {
    private var heldSince: [UInt64]
    private var congestedUntil: [UInt64]
    let waitNanoseconds: UInt64
    static let congestionNanoseconds: UInt64 = 1_000_000_000

    init(ports: Int, waitNanoseconds: UInt64) {
        heldSince = Array(repeating: 0, count: ports)
        congestedUntil = heldSince
        self.waitNanoseconds = waitNanoseconds
    }

    /// `port` has no room for a unicast frame at `now` (nanoseconds, never 0): true to hold the
    /// sender back, false to drop the frame.
    mutating func holds(for port: Int, now: UInt64) -> Bool {
        if now < congestedUntil[port] {
            congestedUntil[port] = now &+ Self.congestionNanoseconds
            return false
        }
        if heldSince[port] == 0 { heldSince[port] = now }
        if now &- heldSince[port] < waitNanoseconds { return true }
        heldSince[port] = 0
        congestedUntil[port] = now &+ Self.congestionNanoseconds
        return false
    }

    /// `port` had room: whatever wait was running is over.
    @inline(__always)
    mutating func hadRoom(_ port: Int) {
        heldSince[port] = 0
    }

    /// A new session on `port` starts with a clean slate.
    mutating func reset(_ port: Int) {
        heldSince[port] = 0
        congestedUntil[port] = 0
    }
}
