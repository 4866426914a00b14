import VhostUser
import VirtioCore

/// The link monitor: a thread that notices the back-end going away (the socket hangs up, or a
/// ring violation) and re-establishes the session — by reconnecting in client mode (up to
/// ``VirtioUserDevice/Configuration/reconnectTimeoutMilliseconds``), by accepting the back-end's
/// next connection in server mode — while the data path simply sees a stopped device.
extension VirtioUserDevice {
    /// A weak reference the monitor thread holds, so dropping the device still stops it.
    private final class WeakDevice: Sendable {
        weak let device: VirtioUserDevice?
        init(_ device: VirtioUserDevice) { self.device = device }
    }

    func startLinkMonitor() throws(VirtioError) -> DedicatedThread {
        let weakDevice = WeakDevice(self)
        return try DedicatedThread(name: "virtio-link") {
            var lostAt: UInt64?
            while let device = weakDevice.device, !device.monitorStopping.load(ordering: .relaxed) {
                guard device.watch(&lostAt) else { return }
            }
        }
    }

    /// One step of the monitor, at most ~100 ms. Returns false when monitoring is over (the
    /// reconnection bound ran out).
    private func watch(_ lostAt: inout UInt64?) -> Bool {
        let socket = control.withLock { $0.session?.channel.socket }
        if let socket {
            guard let reason = failure(socket) else {
                reportBadLengths()
                return true
            }
            control.withLock { state in
                // Only if nothing replaced the session meanwhile.
                guard state.session?.channel.socket === socket else { return }
                tearDown(&state, reason: reason, orderly: false)
            }
            lostAt = MonotonicClock.nanoseconds()
            return true
        }
        // Link down: try to bring it back.
        let since = lostAt ?? MonotonicClock.nanoseconds()
        lostAt = since
        if configuration.connectionMode == .client {
            let bound = MonotonicClock.nanoseconds(milliseconds: configuration.reconnectTimeoutMilliseconds)
            if MonotonicClock.nanoseconds() - since > bound {
                let reason = LinkDownReason.gaveUpReconnecting(milliseconds: configuration.reconnectTimeoutMilliseconds)
                control.withLock { $0.downReason = reason }
                configuration.logger.error("gave up reconnecting", metadata: ["socket": "\(configuration.socketPath)", "reason": "\(reason)"])
                return false
            }
        }
        // The wait for a back-end and the negotiation run on a copy of the state, outside the
        // lock: `linkState` and `sentRequests` never wait for them. Only this thread changes the
        // state while the link is down, and stop() joins it before tearing down.
        guard var draft = control.withLock({ state in state.started && state.session == nil ? state : nil }) else { return true }
        do throws(VirtioError) {
            let socket = try connect(&draft, timeoutMilliseconds: 100)
            // Registered under the lock, then the stop flag read: either stop() sees the
            // socket and shuts it down, or this sees the flag.
            control.withLock { $0.negotiating = socket }
            defer { control.withLock { $0.negotiating = nil } }
            guard !monitorStopping.load(ordering: .relaxed) else { return false }
            try establish(socket, &draft)
            lostAt = nil
        } catch {
            draft.downReason = .reconnecting(lastAttempt: error)
            // Every 100 ms while the back-end is away: debug, not noise.
            configuration.logger.debug("reconnection attempt failed", metadata: ["error": "\(error)"])
        }
        control.withLock { state in
            // stop() may have taken the monitor meanwhile: that part is its own.
            let monitor = state.monitor
            state = draft
            state.monitor = monitor
        }
        if lostAt != nil { MonotonicClock.sleep(milliseconds: configuration.connectionMode == .client ? 100 : 0) }
        return true
    }

    /// Waits up to 100 ms for the socket to hang up; also reports a ring violation and a
    /// fault in the memory. Returns why the session is over, or nil.
    private func failure(_ socket: OwnedDescriptor) -> LinkDownReason? {
        if memoryFaults() != faultsAtRenewal.load(ordering: .relaxed) { return .failed(.memory(.holePunched)) }
        // A violation ends the session as a hang-up would; tearDown then gives the violation
        // (and counts it) as the reason.
        if pairs.contains(where: { $0.rx.violation != nil || $0.tx.violation != nil }) { return .backEndClosed }
        return Poll.waitHangUp(socket.raw, milliseconds: 100) ? .backEndClosed : nil
    }
}
