#if canImport(Glibc)
import Glibc
#endif
import Logging
import SystemPackage
import VirtioCore
import Synchronization
import VhostUser

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
        /// negotiated), its session ended (and why). Forwarding never logs. Silent unless you
        /// pass one (swift-log's guidance for libraries).
        public var logger = Logger(label: "swift-virtio-user.backend") { _ in SwiftLogNoOpLogHandler() }
        /// Runs on the serving thread before it serves: to pin it to a CPU, or to instrument it.
        package var onServingThreadStart: (@Sendable () -> Void)?

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
            throw .invalid("burstSize", configuration.burstSize, "1…1024")
        }
        guard (1...64).contains(configuration.queuePairs) else {
            throw .invalid("queuePairs", configuration.queuePairs, "1…64")
        }
        guard (VirtioNetMTU.minimum...VirtioNetMTU.maximum).contains(configuration.mtu) else {
            throw .invalid("mtu", configuration.mtu, "\(VirtioNetMTU.minimum)…\(VirtioNetMTU.maximum)")
        }
        if configuration.tapInterface != nil, configuration.mode != .tap {
            throw .invalid("tapInterface", configuration.tapInterface ?? "", "a TAP interface is only used in tap mode (the mode is \(configuration.mode.rawValue))")
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
                throw .state(.alreadyRunning("The back-end"))
            }
            guard !server.stopping.load(ordering: .relaxed) else {
                throw .state(.stopped("This back-end"))
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

/// What the serving thread shares with the public object; the loop itself is ``ServingHost/serve()``.
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

    /// Serves connections until stopped, with the data path of the configured mode (chosen
    /// here, once: the serving loop is specialised for it).
    func serve() {
        configuration.onServingThreadStart?()
        let burst = configuration.burstSize
        switch configuration.mode {
        case .loopback:
            BackendSessionHost(server: self, forwarding: Loopback(burst: burst, counters: counters)).serve()
        case .sink:
            BackendSessionHost(server: self, forwarding: Sink(burst: burst, counters: counters)).serve()
        case .tap:
            guard let tap else { return }  // `init` opened it
            BackendSessionHost(server: self, forwarding: TapBridge(tap: tap, burst: burst, counters: counters)).serve()
        }
    }

    /// The next front-end, when one is waiting: accepted (server mode) or connected to (client
    /// mode, which waits up to about 200 ms for it).
    func nextConnection() -> OwnedDescriptor? {
        do throws(VirtioError) {
            switch configuration.connectionMode {
            case .server:
                return try listener.withLock({ $0 })?.accept(milliseconds: 0)
            case .client:
                return try UnixSocket.connect(to: configuration.socketPath, retry: .init(timeoutMilliseconds: 100))
            }
        } catch {
            // A front-end not (yet, or no longer) listening is the normal wait in client mode.
            if !(configuration.connectionMode == .client && [Errno.noSuchFileOrDirectory, .connectionRefused].contains(error.errno)) {
                record(error)
            }
            MonotonicClock.sleep(milliseconds: 100)
            return nil
        }
    }

    func record(_ error: VirtioError) {
        counters.lastError.withLock { $0 = error }
    }
}

/// The back-end's side of the serving loop: one session at a time, moved by `Forwarding`.
private final class BackendSessionHost<Forwarding: FrameForwarding>: ServingHost {
    let server: BackendServer
    let forwarding: Forwarding
    var sessions: [BackendConnection?] = [nil]
    var idlePollsBeforeSleep: Int { server.configuration.idlePollsBeforeSleep }
    var isStopping: Bool { server.stopping.load(ordering: .relaxed) }
    private var tapLossLogged = false

    init(server: BackendServer, forwarding: Forwarding) {
        self.server = server
        self.forwarding = forwarding
    }

    func forwarding(_ slot: Int) -> Forwarding { forwarding }

    func connect(_ slot: Int) -> BackendConnection? {
        guard let socket = server.nextConnection() else { return nil }
        let configuration = server.configuration
        BackendCounters.add(server.counters.connections, 1)
        var offered = configuration.offeredFeatures
        if configuration.macAddress == nil { offered.remove(.netMAC) }
        let connection = BackendConnection(
            socket: socket, offeredFeatures: offered,
            offeredProtocolFeatures: configuration.offeredFeatures.contains(.vhostUserProtocolFeatures)
                ? configuration.offeredProtocolFeatures : [],
            queuePairs: configuration.queuePairs, macAddress: configuration.macAddress,
            mtu: configuration.mtu, linkUp: { [server] in server.linkUp.load(ordering: .relaxed) })
        connection.dataPath.frameObserver = configuration.frameObserver
        configuration.logger.info("front-end connected", metadata: ["socket": "\(configuration.socketPath)"])
        return connection
    }

    func connectDescriptor(_ slot: Int) -> Int32? {
        server.configuration.connectionMode == .server ? server.listener.withLock({ $0 })?.descriptor.raw : nil
    }

    func started(_ slot: Int, _ session: BackendConnection) throws(VirtioError) {
        server.configuration.logger.info("front-end's rings started", metadata: [
            "features": "\(session.features)", "protocol_features": "\(session.protocolFeatures)",
            "rings": "\(session.features.contains(.ringPacked) ? "packed" : "split")",
        ])
        try server.tap?.allowChecksumOffload(session.features.contains(.netGuestCsum))
    }

    func serviced(_ slot: Int, _ session: BackendConnection) {
        if let tap = server.tap, !tapLossLogged, tap.gone.load(ordering: .relaxed) {
            tapLossLogged = true
            server.configuration.logger.error("the TAP interface was deleted: frames for it are dropped until the back-end is restarted", metadata: ["tap": "\(tap.name)"])
        }
    }

    func ended(_ slot: Int, _ session: BackendConnection, _ error: VirtioError?) {
        let logger = server.configuration.logger
        let socketPath = server.configuration.socketPath
        if let error {
            if !error.isDeparture {
                if error.isPeerViolation { BackendCounters.add(server.counters.protocolErrors, 1) }
                server.record(error)
                logger.error("session closed", metadata: ["socket": "\(socketPath)", "error": "\(error)"])
            } else {
                logger.info("front-end disconnected", metadata: ["socket": "\(socketPath)"])
            }
        } else {
            logger.info("session ended: the back-end is stopping", metadata: ["socket": "\(socketPath)"])
        }
        // The negotiation before the trace: a caller that waits for a connection's trace
        // then finds its negotiation too.
        server.negotiations.withLock {
            $0.append(.init(features: session.features, protocolFeatures: session.protocolFeatures, mtu: session.announcedMTU))
            if $0.count > VhostUserBackend.tracedConnections { $0.removeFirst() }
        }
        server.traces.withLock {
            $0.append(session.received.map(\.description))
            if $0.count > VhostUserBackend.tracedConnections { $0.removeFirst() }
        }
    }

    /// The TAP, while pair 0 has receive buffers for what it brings: a readable TAP would
    /// otherwise end every sleep at once.
    func wakeDescriptors() -> [Int32] {
        guard let tap = server.tap, !tap.gone.load(ordering: .relaxed), let session = sessions[0],
              let rxVring = session.vrings.first, rxVring.enabled, let rx = rxVring.ring, rx.availableCount() > 0
        else { return [] }
        return [tap.descriptor.raw]
    }
}
