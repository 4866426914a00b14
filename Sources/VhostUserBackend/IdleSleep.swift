import VirtioCore

/// The idle sleep of both serving loops, the back-end's (one session) and the switch's (one
/// session per port): notifications armed, one more look for work, then a bounded sleep on
/// every socket and kick fd (and whatever else may bring work), kicks drained after.
enum IdleSleep {
    /// How long one sleep lasts at most, so `stopping` is seen and the clock moves on.
    static let milliseconds: Int32 = 100

    /// Asks each session's front-end for kicks and looks for work once more (a frame may have
    /// arrived between the last poll and the request); sleeps on the sessions' sockets and kick
    /// fds and on `extra` until one is readable or ``milliseconds`` pass. Returns false when it
    /// slept that long without anything happening.
    static func sleep(
        _ sessions: [BackendConnection], extra: [Int32], hasWork: () -> Bool
    ) throws(VirtioError) -> Bool {
        var rings: [any DeviceRing] = []
        for session in sessions { rings += session.vrings.compactMap(\.ring) }
        for ring in rings { ring.setNotificationsEnabled(true) }
        defer { for ring in rings { ring.setNotificationsEnabled(false) } }
        if hasWork() { return true }
        var fds = extra
        for session in sessions {
            fds.append(session.channel.socket.raw)
            fds += session.vrings.compactMap { $0.kick?.descriptor.raw }
        }
        let ready = try Poll.waitAny(fds, milliseconds: milliseconds)
        for session in sessions {
            for vring in session.vrings { vring.kick?.drain() }
        }
        return !ready.isEmpty
    }
}
