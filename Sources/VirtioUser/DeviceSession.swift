import Logging
import VhostUser
import VirtioCore

/// Establishing and ending vhost-user sessions. Every function here takes the state `inout`:
/// with the control lock held, or (the link monitor, reconnecting) on its own copy, which it
/// puts back under the lock.
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
            if state.listener == nil { state.listener = try Listener(path: configuration.socketPath, access: configuration.socketAccess) }
            guard let listener = state.listener else { throw .connection(.listenerClosed) }
            let wait = Int32(clamping: timeoutMilliseconds)
            guard let socket = try listener.accept(milliseconds: wait) else {
                throw .connection(.noPeerConnected(path: configuration.socketPath, milliseconds: timeoutMilliseconds))
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
            state.downReason = .failed(error)
            for pair in pairs { pair.reclaimAll() }
            configuration.logger.error("negotiation with the back-end failed", metadata: [
                "socket": "\(configuration.socketPath)", "error": "\(error)",
            ])
            throw error
        }
        state.session = session
        let number = connections.add(1, ordering: .relaxed).newValue
        for pair in pairs { pair.running.store(true, ordering: .sequentiallyConsistent) }
        configuration.logger.info("link up", metadata: [
            "socket": "\(configuration.socketPath)", "session": "\(number)",
            "features": "\(state.negotiated)", "protocol_features": "\(state.protocolFeatures)",
            "rings": "\(state.negotiated.contains(.ringPacked) ? "packed" : "split")",
            "queue_pairs": "\(pairs.count)", "mac": "\(state.macAddress)", "mtu": "\(state.mtu)",
        ])
    }

    /// The features we ask for out of what the back-end offers: what we support, except MQ
    /// with a single pair, MAC when we have our own or cannot read the back-end's, MTU when we
    /// neither announce one nor can read one, STATUS when we cannot read it.
    func wantedFeatures(protocolFeatures: VhostUserProtocolFeatures) -> VirtioFeatures {
        var wanted = Self.supportedFeatures
        let readsConfig = protocolFeatures.contains(.config)
        if pairs.count == 1 { wanted.remove(.netMultiqueue) }
        if !configuration.mergeableReceiveBuffers { wanted.remove(.netMergeableRxBuffers) }
        if !configuration.eventIndex { wanted.remove(.ringEventIndex) }
        if !configuration.indirectDescriptors { wanted.remove(.ringIndirectDescriptors) }
        if !configuration.inOrder || configuration.packedRing { wanted.remove(.inOrder) }
        if !configuration.packedRing { wanted.remove(.ringPacked) }
        wanted.formUnion(configuration.offloads.features)
        if configuration.macAddress != nil || !readsConfig { wanted.remove(.netMAC) }
        if configuration.mtu == nil && !readsConfig { wanted.remove(.netMTU) }
        if !readsConfig { wanted.remove(.netStatus) }
        return wanted
    }

    /// After the features are agreed: announces our MTU, and reads the back-end's MAC, MTU and
    /// link status from its config space where those were negotiated.
    private func applyNetConfig(_ session: VhostUserFrontend, features: VirtioFeatures, protocolFeatures: VhostUserProtocolFeatures, _ state: inout ControlState) throws(VirtioError) {
        if let mtu = configuration.mtu, features.contains(.netMTU), protocolFeatures.contains(.mtu) {
            try session.netSetMTU(mtu)
        }
        state.linkStatusFromConfig = false
        guard protocolFeatures.contains(.config), !features.intersection([.netMAC, .netMTU, .netStatus]).isEmpty else { return }
        let bytes = try session.getConfig(offset: 0, size: UInt32(VirtioNetConfig.byteCount))
        guard let config = VirtioNetConfig(bytes: bytes) else {
            throw .negotiation(.shortConfigSpace(bytes: bytes.count))
        }
        if features.contains(.netMAC) {
            guard !config.macAddress.isMulticast, config.macAddress != MACAddress(0, 0, 0, 0, 0, 0) else {
                throw .negotiation(.invalidMACAddress(config.macAddress))
            }
            state.macAddress = config.macAddress
        }
        if features.contains(.netMTU), configuration.mtu == nil {
            guard Int(config.mtu) >= VirtioNetMTU.minimum else {
                throw .negotiation(.invalidMTU(Int(config.mtu)))
            }
            state.mtu = Int(config.mtu)
        }
        state.linkStatusFromConfig = features.contains(.netStatus)
    }

    private func negotiate(_ session: VhostUserFrontend, _ state: inout ControlState) throws(VirtioError) {
        try session.setOwner()
        let offered = try session.getFeatures()
        guard offered.contains(.version1) else {
            throw .negotiation(.missingFeature(feature: "VIRTIO_F_VERSION_1, as legacy virtio is not supported", offered: offered))
        }
        var protocolFeatures: VhostUserProtocolFeatures = []
        if offered.contains(.vhostUserProtocolFeatures) {
            protocolFeatures = try session.getProtocolFeatures().intersection(.implemented)
            try session.setProtocolFeatures(protocolFeatures)
            if protocolFeatures.contains(.multiqueue) {
                let offeredPairs = try session.getQueueNum()
                guard offeredPairs >= 1 else {
                    throw .negotiation(.queuePairs(offered: 0, wanted: pairs.count))
                }
                guard offeredPairs >= UInt64(pairs.count) else {
                    throw .negotiation(.queuePairs(offered: Int(clamping: offeredPairs), wanted: pairs.count))
                }
            }
        }
        if pairs.count > 1 {
            guard offered.contains(.netMultiqueue), protocolFeatures.contains(.multiqueue) else {
                throw .negotiation(.missingFeature(feature: "VIRTIO_NET_F_MQ with the MQ protocol feature, which \(pairs.count) queue pairs need (protocol features offered: \(protocolFeatures))", offered: offered))
            }
        }
        let features = offered.intersection(wantedFeatures(protocolFeatures: protocolFeatures))
        let packed = features.contains(.ringPacked)
        if sharedWithABackEnd.load(ordering: .relaxed) { try renewSharedResources() }
        for pair in pairs { pair.resetRings(packed: packed) }
        sharedWithABackEnd.store(true, ordering: .relaxed)
        for pair in pairs {
            try session.setVringCall(index: pair.rxRingIndex, notifier: pair.rxCall)
            try session.setVringCall(index: pair.txRingIndex, notifier: pair.txCall)
        }
        try session.setFeatures(features)
        for pair in pairs {
            pair.rx.mergeable = features.contains(.netMergeableRxBuffers)
            pair.tx.ring.usesIndirect = features.contains(.ringIndirectDescriptors)
            pair.tx.offloads = features.intersection([.netCsum, .netHostTSO4, .netHostTSO6])
            for ring in [pair.rx.ring, pair.tx.ring] {
                ring.usesEventIndex = features.contains(.ringEventIndex)
                ring.setInterruptsEnabled(false)
            }
            if !packed {
                // The receive ring was just filled in ring order, as in-order use requires.
                pair.rx.split.setInOrder(features.contains(.inOrder))
                pair.tx.split.setInOrder(features.contains(.inOrder))
            }
        }
        let usesStatus = protocolFeatures.contains(.status)
        let negotiatedStatus: VirtioDeviceStatus = [.acknowledge, .driver, .featuresOK]
        if usesStatus {
            try session.setStatus(negotiatedStatus)
            let status = try session.getStatus()
            guard status.contains(.featuresOK) else {
                throw .negotiation(.featuresRejected(features))
            }
        }
        try applyNetConfig(session, features: features, protocolFeatures: protocolFeatures, &state)
        try session.setMemTable(
            [MemoryRegionDescriptor(
                guestPhysicalAddress: UInt64(UInt(bitPattern: memory.base)), size: UInt64(memory.size),
                userAddress: UInt64(UInt(bitPattern: memory.base)), mmapOffset: 0)],
            descriptors: [memory.descriptor.raw])
        for pair in pairs {
            for (index, split, packedRing, kick) in [
                (pair.rxRingIndex, pair.rx.split, pair.rx.packed, pair.rx.kick),
                (pair.txRingIndex, pair.tx.split, pair.tx.packed, pair.tx.kick),
            ] {
                try session.setVringNum(index: index, size: UInt32(split.size))
                if packed {
                    // SET_VRING_ADDR's available and used fields carry the driver and device
                    // event areas of a packed ring.
                    try session.setVringBase(index: index, base: packedRing.vringBase)
                    try session.setVringAddr(VringAddress(
                        index: index,
                        descriptorTable: UInt64(UInt(bitPattern: packedRing.memory.descriptors)),
                        usedRing: UInt64(UInt(bitPattern: packedRing.memory.deviceEvent)),
                        availableRing: UInt64(UInt(bitPattern: packedRing.memory.driverEvent))))
                } else {
                    try session.setVringBase(index: index, base: split.vringBase)
                    try session.setVringAddr(VringAddress(
                        index: index,
                        descriptorTable: UInt64(UInt(bitPattern: split.memory.descriptors)),
                        usedRing: UInt64(UInt(bitPattern: split.memory.used)),
                        availableRing: UInt64(UInt(bitPattern: split.memory.avail))))
                }
                try session.setVringKick(index: index, notifier: kick)
            }
        }
        if offered.contains(.vhostUserProtocolFeatures) {
            for pair in pairs {
                try session.setVringEnable(index: pair.rxRingIndex, enabled: true)
                try session.setVringEnable(index: pair.txRingIndex, enabled: true)
            }
        }
        if usesStatus {
            try session.setStatus(negotiatedStatus.union(.driverOK))
        }
        // The receive rings were filled before the back-end knew them: wake it once.
        for pair in pairs { try pair.rx.kick.signal() }
        state.negotiated = features
        state.protocolFeatures = protocolFeatures
    }

    /// Ends the session: waits for a burst in progress, then (when `orderly`, i.e. the back-end
    /// is still there) disables the rings and asks where they stopped, closes the connection
    /// and reclaims every buffer.
    func tearDown(_ state: inout ControlState, reason: LinkDownReason, orderly: Bool) {
        defer {
            let metadata: Logger.Metadata = ["socket": "\(configuration.socketPath)", "reason": "\(state.downReason)"]
            // An orderly stop is the caller's doing; anything else is news.
            if orderly {
                configuration.logger.info("link down", metadata: metadata)
            } else {
                configuration.logger.warning("link down", metadata: metadata)
            }
        }
        for pair in pairs { pair.quiesce() }
        reportBadLengths()
        var reason = reason
        if orderly, let session = state.session {
            // A back-end that answers slowly, or not at all, gets this much in all.
            session.channel.deadline = MonotonicClock.deadline(milliseconds: ControlBudget.teardownMilliseconds, after: MonotonicClock.nanoseconds())
            do throws(VirtioError) {
                if state.negotiated.contains(.vhostUserProtocolFeatures) {
                    for pair in pairs {
                        try session.setVringEnable(index: pair.rxRingIndex, enabled: false)
                        try session.setVringEnable(index: pair.txRingIndex, enabled: false)
                    }
                }
                for pair in pairs {
                    _ = try session.getVringBase(index: pair.rxRingIndex)
                    _ = try session.getVringBase(index: pair.txRingIndex)
                }
            } catch {
                // The link goes down as asked; the back-end's failure is news for the operator.
                configuration.logger.warning("the back-end did not answer the teardown", metadata: [
                    "socket": "\(configuration.socketPath)", "error": "\(error)",
                ])
            }
        }
        // Each pair's violation counts on its own queue. The first one is the reason given when
        // the back-end merely hung up: it says more than the hang-up that may have followed it
        // (a stop, a hole in the memory or a failed query keep their own reason).
        if let violation = pairs.compactMap({ $0.takeViolation() }).first, reason == .backEndClosed {
            reason = .failed(.ringViolation(violation))
        }
        state.session = nil
        state.downReason = reason
        for pair in pairs { pair.reclaimAll() }
    }

    /// Logs, once per session, the first used length the back-end reported that a receive
    /// buffer cannot hold (the frames are counted in `statistics.rx.errors`, never logged one
    /// by one: the data path does not log).
    func reportBadLengths() {
        for (index, pair) in pairs.enumerated() {
            guard let written = pair.rx.takeBadLengthToReport() else { continue }
            configuration.logger.warning("receive length error", metadata: [
                "socket": "\(configuration.socketPath)", "queue_pair": "\(index)",
                "reason": "the back-end reported \(written) bytes written into a \(ReceiveQueue.bufferLength)-byte receive buffer (with a \(VirtioNetHeader.size)-byte header); such frames are dropped and counted in statistics.rx.errors",
            ])
        }
    }
}
