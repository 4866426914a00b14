import VhostUser
import VirtioCore

/// Establishing and ending vhost-user sessions. Every function here runs with the control
/// lock held (it takes the state `inout`).
extension VirtioUserDevice {
    typealias Listener = UnixListener

    /// Reaches the back-end: client mode connects (retrying while it is not there), server mode
    /// listens (once per start) and accepts. Waits at most `timeoutMilliseconds`.
    func connect(_ state: inout ControlState, timeoutMilliseconds: Int) throws(VirtioError) -> OwnedDescriptor {
        switch configuration.connectionMode {
        case .client:
            return try UnixSocket.connect(
                to: configuration.socketPath, retry: .init(timeoutMilliseconds: timeoutMilliseconds))
        case .server:
            if state.listener == nil { state.listener = try Listener(path: configuration.socketPath) }
            guard let listener = state.listener else { throw VirtioError(.invalidState, "No listening socket.") }
            let wait = Int32(clamping: timeoutMilliseconds)
            guard let socket = try listener.accept(milliseconds: wait) else {
                throw VirtioError(.timeout, "No vhost-user back-end connected to \(configuration.socketPath) within \(timeoutMilliseconds) ms; start it in client mode (DPDK: iface=\(configuration.socketPath),client=1).")
            }
            return socket
        }
    }

    /// Negotiates over a fresh connection and starts the queues; on failure the link stays
    /// down with the reason.
    func establish(_ socket: OwnedDescriptor, _ state: inout ControlState) throws(VirtioError) {
        let session = VhostUserFrontend(socket: socket, replyTimeoutMilliseconds: configuration.replyTimeoutMilliseconds)
        do throws(VirtioError) {
            try negotiate(session, &state)
        } catch {
            state.downReason = error.message
            queues.reclaimAll()
            throw error
        }
        state.session = session
        connections.add(1, ordering: .relaxed)
        queues.running.store(true, ordering: .sequentiallyConsistent)
    }

    private func negotiate(_ session: VhostUserFrontend, _ state: inout ControlState) throws(VirtioError) {
        try session.setOwner()
        let offered = try session.getFeatures()
        guard offered.contains(.version1) else {
            throw VirtioError(.unsupported, "The back-end does not offer VIRTIO_F_VERSION_1 (offered \(offered)); legacy virtio is not supported.")
        }
        var protocolFeatures: VhostUserProtocolFeatures = []
        if offered.contains(.vhostUserProtocolFeatures) {
            protocolFeatures = try session.getProtocolFeatures().intersection(.implemented)
            try session.setProtocolFeatures(protocolFeatures)
            if protocolFeatures.contains(.multiqueue) {
                let pairs = try session.getQueueNum()
                guard pairs >= 1 else {
                    throw VirtioError(.protocolViolation, "The back-end reports \(pairs) queue pairs; at least 1 is needed.")
                }
            }
        }
        queues.resetRings()
        try session.setVringCall(index: Self.rxIndex, notifier: notifiers.rxCall)
        try session.setVringCall(index: Self.txIndex, notifier: notifiers.txCall)
        let features = offered.intersection(Self.supportedFeatures)
        try session.setFeatures(features)
        let usesStatus = protocolFeatures.contains(.status)
        let negotiatedStatus: VirtioDeviceStatus = [.acknowledge, .driver, .featuresOK]
        if usesStatus {
            try session.setStatus(negotiatedStatus)
            let status = try session.getStatus()
            guard status.contains(.featuresOK) else {
                throw VirtioError(.unsupported, "The back-end did not accept features \(features) (FEATURES_OK cleared).")
            }
        }
        try session.setMemTable(
            [MemoryRegionDescriptor(
                guestPhysicalAddress: UInt64(UInt(bitPattern: memory.base)), size: UInt64(memory.size),
                userAddress: UInt64(UInt(bitPattern: memory.base)), mmapOffset: 0)],
            descriptors: [memory.descriptor.raw])
        for (index, ring, kick) in [(Self.rxIndex, queues.rx.ring, notifiers.rxKick), (Self.txIndex, queues.tx.ring, notifiers.txKick)] {
            try session.setVringNum(index: index, size: UInt32(ring.size))
            try session.setVringBase(index: index, base: UInt32(ring.startIndex))
            try session.setVringAddr(VringAddress(
                index: index,
                descriptorTable: UInt64(UInt(bitPattern: ring.memory.descriptors)),
                usedRing: UInt64(UInt(bitPattern: ring.memory.used)),
                availableRing: UInt64(UInt(bitPattern: ring.memory.avail))))
            try session.setVringKick(index: index, notifier: kick)
        }
        if offered.contains(.vhostUserProtocolFeatures) {
            try session.setVringEnable(index: Self.rxIndex, enabled: true)
            try session.setVringEnable(index: Self.txIndex, enabled: true)
        }
        if usesStatus {
            try session.setStatus(negotiatedStatus.union(.driverOK))
        }
        // The receive ring was filled before the back-end knew it: wake it once.
        notifiers.rxKick.signal()
        state.negotiated = features
        state.protocolFeatures = protocolFeatures
    }

    /// Ends the session: waits for a burst in progress, then (when `orderly`, i.e. the back-end
    /// is still there) disables the rings and asks where they stopped, closes the connection
    /// and reclaims every buffer.
    func tearDown(_ state: inout ControlState, reason: String, orderly: Bool) {
        queues.quiesce()
        var text = reason
        if orderly, let session = state.session {
            do throws(VirtioError) {
                if state.negotiated.contains(.vhostUserProtocolFeatures) {
                    try session.setVringEnable(index: Self.rxIndex, enabled: false)
                    try session.setVringEnable(index: Self.txIndex, enabled: false)
                }
                _ = try session.getVringBase(index: Self.rxIndex)
                _ = try session.getVringBase(index: Self.txIndex)
            } catch {
                text += " (the back-end did not answer the teardown: \(error.message))"
            }
        }
        if let violation = queues.takeViolation() { text += "; \(violation)" }
        state.session = nil
        state.downReason = text
        queues.reclaimAll()
    }
}
