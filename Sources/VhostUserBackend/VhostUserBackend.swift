#if canImport(Glibc)
import Glibc
#endif
import Logging
@_exported import VirtioCore
import Synchronization
@_exported import VhostUser

/// A vhost-user back-end (the device side) written in Swift: listens on a Unix socket, serves
/// one front-end at a time — ours, or DPDK's virtio-user — and accepts the next one after a
/// disconnect.
///
/// ```swift
/// let backend = try VhostUserBackend(configuration: .init(socketPath: "/tmp/vhost.sock", mode: .loopback))
/// try backend.start()      // serves on its own thread
/// …
/// backend.stop()
/// ```
///
/// The serving thread polls the rings while traffic flows; after a quiet spell it asks the
/// front-end for kicks and sleeps on them, so an idle back-end costs no CPU.
public final class VhostUserBackend: Sendable {
    /// How a back-end is set up.
    public struct Configuration: Sendable {
        /// Where to listen.
        public var socketPath: String
        /// The listening socket file's mode and group (server mode), for front-ends that run
        /// as another user: `.init(mode: 0o660, group: "kvm")`.
        public var socketAccess = SocketFileAccess()
        /// What to do with frames.
        public var mode: BackendMode
        /// `.server` (default): listen on `socketPath` for front-ends. `.client`: connect to a
        /// front-end listening there (DPDK virtio-user with `server=1`), and reconnect after it
        /// goes away.
        public var connectionMode: ConnectionMode = .server
        /// The TAP interface ``BackendMode/tap`` bridges to: attached to when it exists,
        /// created (down, without addresses) when it does not; nil lets the kernel name it
        /// (``VhostUserBackend/tapInterfaceName`` says what it picked). Opening a TAP needs
        /// /dev/net/tun and CAP_NET_ADMIN, unless it is a persistent TAP owned by this user.
        /// The TAP is held from `init` until the back-end is released, across connections; its
        /// MTU should be the front-ends' (``mtu``), since larger frames from the kernel are
        /// dropped. Frames from the kernel arrive on queue pair 0.
        public var tapInterface: String?
        /// Frames handled per ring per burst.
        public var burstSize = 32
        /// Empty polls before the thread sleeps on kicks.
        public var idlePollsBeforeSleep = 20_000
        /// Queue pairs served to each front-end (1…64): what GET_QUEUE_NUM answers. A front-end
        /// may use fewer; frames sent on pair n come back on pair n.
        public var queuePairs = 8
        /// Features offered to front-ends. MAC is offered only when ``macAddress`` is set.
        /// IN_ORDER is honoured by construction: each ring's buffers are used in the order
        /// they were made available (one used entry each, never batched). RING_PACKED serves
        /// packed rings to front-ends that ask for them (split otherwise).
        public var offeredFeatures: VirtioFeatures = [
            .version1, .vhostUserProtocolFeatures, .netMultiqueue, .netMAC, .netMTU, .netStatus,
            .netMergeableRxBuffers, .ringEventIndex, .ringIndirectDescriptors, .inOrder, .ringPacked,
            .netCsum, .netGuestCsum, .netHostTSO4, .netHostTSO6, .netGuestTSO4, .netGuestTSO6,
        ]
        /// The MAC address served in the config space (VIRTIO_NET_F_MAC), which a front-end
        /// without a MAC of its own adopts; nil offers none.
        public var macAddress: MACAddress?
        /// The MTU served in the config space (VIRTIO_NET_F_MTU) until a front-end announces
        /// its own with NET_SET_MTU.
        public var mtu = VirtioNetMTU.ethernetDefault
        /// Protocol features offered (when `offeredFeatures` has PROTOCOL_FEATURES). CONFIG
        /// serves ``macAddress``, ``mtu`` and the link state to front-ends that read them
        /// (virtio-user); QEMU, which keeps a config space of its own, warns when it is offered:
        /// remove it for QEMU guests.
        public var offeredProtocolFeatures: VhostUserProtocolFeatures = .implemented
        /// Called with a 64-bit FNV-1a digest and the length of every frame taken from a
        /// front-end's transmit queue, in order. For verifying peers we do not control (such as
        /// DPDK's testpmd); costs a hash per frame, so leave it nil for speed. A test hook
        /// (`package`), not API.
        package var frameObserver: (@Sendable (_ digest: UInt64, _ length: Int) -> Void)?
        /// Where connection events go: a front-end connected, its rings started (with what it
        /// negotiated), its session ended (and why). Forwarding never logs.
        public var logger = Logger(label: "swift-virtio-user.backend")
        /// Runs on the serving thread before it serves: to pin it to a CPU, or to instrument it.
        public var onServingThreadStart: (@Sendable () -> Void)?

        /// A configuration with defaults for the rest.
        public init(socketPath: String, mode: BackendMode = .loopback) {
            self.socketPath = socketPath
            self.mode = mode
        }
    }

    /// The configuration in force.
    public var configuration: Configuration { server.configuration }
    private let server: BackendServer
    private let thread = Locked<DedicatedThread?>(nil)

    /// Binds the socket (replacing a stale one). Serving starts with ``start()``.
    public init(configuration: Configuration) throws(VirtioError) {
        guard (1...1024).contains(configuration.burstSize) else {
            throw VirtioError(.invalidArgument, "Back-end burst size \(configuration.burstSize) must be 1…1024.")
        }
        guard (1...64).contains(configuration.queuePairs) else {
            throw VirtioError(.invalidArgument, "Back-end queue pairs \(configuration.queuePairs) must be 1…64.")
        }
        guard (VirtioNetMTU.minimum...VirtioNetMTU.maximum).contains(configuration.mtu) else {
            throw VirtioError(.invalidArgument, "Back-end MTU \(configuration.mtu) must be \(VirtioNetMTU.minimum)…\(VirtioNetMTU.maximum).")
        }
        if configuration.tapInterface != nil, configuration.mode != .tap {
            throw VirtioError(.invalidArgument, "A TAP interface is only used in tap mode (the mode is \(configuration.mode.rawValue)).")
        }
        let tap = configuration.mode == .tap ? try TapDevice(name: configuration.tapInterface ?? "") : nil
        let listener = configuration.connectionMode == .server ? try UnixListener(path: configuration.socketPath, access: configuration.socketAccess) : nil
        server = BackendServer(configuration: configuration, listener: listener, tap: tap)
    }

    /// Dropping the back-end stops it: the serving thread holds the server, not this object.
    deinit {
        stop()
    }

    /// The TAP interface's name in ``BackendMode/tap`` (nil in the other modes).
    public var tapInterfaceName: String? { server.tap?.name }

    /// Counters over every connection so far.
    public var statistics: BackendStatistics { server.counters.snapshot }

    /// The requests each finished connection sent, in order, one list per connection (for
    /// checking a front-end's message order): the last ``tracedConnections`` connections, and
    /// each one's first 1,024 requests, so a long-running back-end holds a bounded amount.
    /// A test hook (`package`), not API.
    package var requestTraces: [[String]] { server.traces.withLock { $0 } }

    /// What each finished connection's front-end set with SET_FEATURES and
    /// SET_PROTOCOL_FEATURES, one entry per connection (the last ``tracedConnections``).
    package var negotiations: [Negotiation] { server.negotiations.withLock { $0 } }

    /// How many finished connections ``requestTraces`` and ``negotiations`` remember.
    package static let tracedConnections = 64

    /// The features one front-end chose.
    package struct Negotiation: Sendable, Equatable {
        package var features: VirtioFeatures
        package var protocolFeatures: VhostUserProtocolFeatures
        /// The MTU it announced with NET_SET_MTU, if it did.
        package var mtu: Int? = nil
    }

    /// Sets the link state served to front-ends in the config space (VIRTIO_NET_S_LINK_UP),
    /// as an administrator takes a port down; front-ends that negotiated STATUS and CONFIG
    /// see it at their next GET_CONFIG. Traffic is not stopped by it. Up at start.
    public func setLinkUp(_ up: Bool) {
        server.linkUp.store(up, ordering: .relaxed)
    }

    /// The link state served to front-ends.
    public var isLinkUp: Bool { server.linkUp.load(ordering: .relaxed) }

    /// Starts serving on a dedicated thread.
    public func start() throws(VirtioError) {
        try thread.withLock { (current) throws(VirtioError) in
            guard current == nil else {
                throw VirtioError(.invalidState, "The back-end is already serving.")
            }
            guard !server.stopping.load(ordering: .relaxed) else {
                throw VirtioError(.invalidState, "This back-end was stopped; create a new one to serve again.")
            }
            let server = self.server
            current = try DedicatedThread(name: "vhost-backend") { server.serve() }
        }
    }

    /// Stops serving (ending any connection), waits for the thread and removes the socket file.
    public func stop() {
        server.stopping.store(true, ordering: .relaxed)
        let running = thread.withLock { current in
            defer { current = nil }
            return current
        }
        running?.join()
        server.closeListener()
    }

    /// Serves connections on the calling thread until ``stop()`` is called from another one
    /// (``start()`` runs this on a dedicated thread).
    public func serve() {
        server.serve()
    }
}

/// The accept loop and per-connection loop, with everything they share with the public object.
final class BackendServer: Sendable {
    let configuration: VhostUserBackend.Configuration
    /// Removes its socket file when released (if still ours).
    let listener: Locked<UnixListener?>
    let counters: BackendCounters
    let stopping = Atomic<Bool>(false)
    let linkUp = Atomic<Bool>(true)
    let traces = Locked<[[String]]>([])
    let negotiations = Locked<[VhostUserBackend.Negotiation]>([])
    /// The interface of ``BackendMode/tap``.
    let tap: TapDevice?

    init(configuration: VhostUserBackend.Configuration, listener: UnixListener?, tap: TapDevice?) {
        self.configuration = configuration
        self.listener = Locked(listener)
        self.tap = tap
        counters = BackendCounters(queuePairs: configuration.queuePairs)
    }

    func closeListener() {
        listener.withLock { $0 = nil }
    }

    /// Serves connections until stopped.
    func serve() {
        configuration.onServingThreadStart?()
        while !stopping.load(ordering: .relaxed) {
            guard let socket = nextConnection() else { continue }
            BackendCounters.add(counters.connections, 1)
            var offered = configuration.offeredFeatures
            if configuration.macAddress == nil { offered.remove(.netMAC) }
            let connection = BackendConnection(
                socket: socket, offeredFeatures: offered,
                offeredProtocolFeatures: configuration.offeredFeatures.contains(.vhostUserProtocolFeatures)
                    ? configuration.offeredProtocolFeatures : [],
                queuePairs: configuration.queuePairs, macAddress: configuration.macAddress,
                mtu: configuration.mtu, linkUp: { [self] in linkUp.load(ordering: .relaxed) })
            connection.dataPath.frameObserver = configuration.frameObserver
            let logger = configuration.logger
            logger.info("front-end connected", metadata: ["socket": "\(configuration.socketPath)"])
            do {
                try run(connection)
                logger.info("session ended: the back-end is stopping", metadata: ["socket": "\(configuration.socketPath)"])
            } catch {
                if error.kind != .peerGone {
                    if error.kind == .protocolViolation { BackendCounters.add(counters.protocolErrors, 1) }
                    record(error)
                    logger.error("session closed", metadata: ["socket": "\(configuration.socketPath)", "error": "\(error.message)"])
                } else {
                    logger.info("front-end disconnected", metadata: ["socket": "\(configuration.socketPath)"])
                }
            }
            // The negotiation before the trace: a caller that waits for a connection's trace
            // then finds its negotiation too.
            negotiations.withLock {
                $0.append(.init(
                    features: connection.features, protocolFeatures: connection.protocolFeatures,
                    mtu: connection.announcedMTU))
                if $0.count > VhostUserBackend.tracedConnections { $0.removeFirst() }
            }
            traces.withLock {
                $0.append(connection.received.map(\.description))
                if $0.count > VhostUserBackend.tracedConnections { $0.removeFirst() }
            }
            // `connection` goes out of scope here: its mappings and fds are released.
        }
    }

    /// The next front-end: accepted (server mode) or connected to (client mode). Waits about
    /// 100 ms at most, so `stopping` is checked often.
    private func nextConnection() -> OwnedDescriptor? {
        do throws(VirtioError) {
            switch configuration.connectionMode {
            case .server:
                guard let current = listener.withLock({ $0 }) else {
                    MonotonicClock.sleep(milliseconds: 100)
                    return nil
                }
                return try current.accept(milliseconds: 100)
            case .client:
                return try UnixSocket.connect(to: configuration.socketPath, retry: .init(timeoutMilliseconds: 100))
            }
        } catch {
            // A front-end not (yet, or no longer) listening is the normal wait in client mode.
            if !(configuration.connectionMode == .client && [ENOENT, ECONNREFUSED].contains(error.errno ?? 0)) {
                record(error)
            }
            MonotonicClock.sleep(milliseconds: 100)
            return nil
        }
    }

    private func record(_ error: VirtioError) {
        counters.lastError.withLock { $0 = error.message }
    }

    /// The per-connection loop: control messages and traffic on one thread, so neither needs
    /// a lock. Returns when the front-end disconnects or the back-end stops.
    private func run(_ connection: BackendConnection) throws(VirtioError) {
        let socket = connection.channel.socket.raw
        let burst = configuration.burstSize
        var idlePolls = 0
        var iterations = 0
        var announced = false
        var tapLossLogged = false
        while !stopping.load(ordering: .relaxed) {
            if !connection.isRunning {
                // Nothing to forward: wait for the next control message.
                if try Poll.waitReadable(socket, milliseconds: 100) != .timedOut {
                    try connection.handlePendingMessages()
                }
                if !connection.isRunning { continue }
            }
            // Announced as soon as the messages that started the rings are handled, before
            // `stopping` is looked at again: a front-end whose set-up was acknowledged always
            // finds it in the log, even if the back-end is stopped right after.
            if !announced {
                announced = true
                configuration.logger.info("front-end's rings started", metadata: [
                    "features": "\(connection.features)", "protocol_features": "\(connection.protocolFeatures)",
                    "rings": "\(connection.features.contains(.ringPacked) ? "packed" : "split")",
                ])
                try tap?.allowChecksumOffload(connection.features.contains(.netGuestCsum))
            }
            let handled = try connection.dataPath.forward(mode: configuration.mode, tap: tap, burst: burst, counters: counters)
            iterations &+= 1
            // Control messages are rare: look for one every 256 bursts, or whenever idle.
            if handled == 0 || iterations & 255 == 0 {
                if let tap, !tapLossLogged, tap.gone.load(ordering: .relaxed) {
                    tapLossLogged = true
                    configuration.logger.error("the TAP interface was deleted: frames for it are dropped until the back-end is restarted", metadata: ["tap": "\(tap.name)"])
                }
                if try connection.handlePendingMessages() > 0 { continue }
            }
            if handled > 0 {
                idlePolls = 0
                continue
            }
            idlePolls &+= 1
            if idlePolls >= configuration.idlePollsBeforeSleep {
                // Woken by a kick or a message: poll again. Woken by the clock only (it checks
                // `stopping`): straight back to sleep, so an idle back-end stays asleep.
                if try sleepUntilKicked(connection) { idlePolls = 0 }
            }
        }
    }

    /// Sleeps until a kick, a message or (in tap mode, while pair 0 has receive buffers for
    /// what it brings) a frame from the TAP. Work is a frame to take from a transmit ring — with
    /// somewhere to put it, in loopback mode: receive buffers waiting on their own are not
    /// work, and a refill kick wakes us when they were what was missing. Returns false when it
    /// slept its 100 ms without anything happening.
    private func sleepUntilKicked(_ connection: BackendConnection) throws(VirtioError) -> Bool {
        var extra: [Int32] = []
        // Only while its frames have somewhere to go: a readable TAP would otherwise end every
        // sleep at once.
        if let tap, !tap.gone.load(ordering: .relaxed), let rxVring = connection.vrings.first, rxVring.enabled,
           let rx = rxVring.ring, rx.availableCount() > 0 {
            extra.append(tap.descriptor.raw)
        }
        return try IdleSleep.sleep([connection], extra: extra) { hasWork(connection) }
    }

    private func hasWork(_ connection: BackendConnection) -> Bool {
        var pair = 0
        while pair &* 2 &+ 1 < connection.vrings.count {
            if let tx = connection.vrings[pair &* 2 &+ 1].ring, tx.availableCount() > 0 {
                if configuration.mode != .loopback { return true }
                if let rx = connection.vrings[pair &* 2].ring, rx.availableCount() > 0 { return true }
            }
            pair &+= 1
        }
        return false
    }
}

