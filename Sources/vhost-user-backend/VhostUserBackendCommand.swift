#if canImport(Glibc)
import VirtioCore
import Glibc
#endif
import ArgumentParser
import Logging
import Synchronization
import VhostUserBackend

/// Set by SIGINT/SIGTERM: stop serving and print the totals.
let stopRequested = Atomic<Bool>(false)

@main
struct VhostUserBackendCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-user-backend",
        abstract: "A vhost-user back-end in Swift: serves virtio-user front-ends (ours or DPDK's) on a Unix socket.",
        discussion: """
        Listens on --socket (or with --client connects to it), serves one front-end at a time and \
        accepts (or reconnects to) the next after a disconnect. \
        loopback returns every transmitted frame on the front-end's receive queue; sink counts and \
        drops; tap bridges the front-end to a Linux TAP interface (--tap), so it exchanges frames \
        with the kernel's network stack: give the TAP an address and bring it up (ip addr add …; \
        ip link set … up), in whichever network namespace you move it to. Runs until SIGINT/SIGTERM or --duration, then prints totals. Exit status: 0; 2 on \
        an error (a one-line message on stderr); 64 for a bad or unknown option.
        """)

    @Option(help: "Socket path to listen on (a stale socket there is replaced), or with --client to connect to. Longer than 107 bytes is fine; @NAME is an abstract socket (no file; its network namespace only).")
    var socket: String

    @Option(help: "loopback, sink or tap.")
    var mode: BackendMode = .loopback

    @Option(help: "With --mode tap: the TAP interface to bridge to, created when it does not exist (default: one the kernel names). Needs /dev/net/tun and root (CAP_NET_ADMIN), unless it is a persistent TAP of this user.")
    var tap: String?

    @Flag(help: "Connect to a front-end listening on --socket (DPDK virtio-user with server=1) instead of listening, and reconnect after it goes away.")
    var client = false

    @Option(help: "Seconds to serve; 0 serves until SIGINT/SIGTERM.")
    var duration: Double = 0

    @Option(name: .customLong("stats-period"), help: "Seconds between stats lines; 0 for none.")
    var statsPeriod: Double = 0

    @Option(help: "Pin the serving thread to this CPU.")
    var cpu: Int?

    @Option(help: "MAC address served to front-ends in the config space (VIRTIO_NET_F_MAC); a front-end without its own adopts it. Default: none offered.")
    var mac: String?

    @Option(help: "MTU served in the config space (VIRTIO_NET_F_MTU) until a front-end announces its own (68…65535).")
    var mtu: Int = 1500

    @Option(help: "Queue pairs offered to each front-end (1…64; what GET_QUEUE_NUM answers). One thread serves them all.")
    var queues: Int = 8

    @Flag(name: .customLong("no-config-space"), help: "Do not offer the CONFIG protocol feature (GET_CONFIG: the MAC, MTU and link status that virtio-user front-ends read). QEMU keeps a config space of its own and warns when a back-end offers it.")
    var noConfigSpace = false

    @Option(name: .customLong("socket-mode"), help: "Permission bits of the listening socket file, in octal (such as 660), for front-ends running as another user.")
    var socketMode: String?

    @Option(name: .customLong("socket-group"), help: "Group (name or number) of the listening socket file: with --socket-mode 660, its members may connect.")
    var socketGroup: String?

    @Option(name: .customLong("log-level"), help: "Connection log messages to stderr at this level and above: trace, debug, info (connected, rings started, disconnected), notice, warning, error (a session closed for a protocol error), critical.")
    var logLevel: Logger.Level = .notice

    func validate() throws {
        if client, socketMode != nil || socketGroup != nil {
            throw ValidationError("--socket-mode and --socket-group set the socket we listen on; with --client the front-end listens.")
        }
        if let socketMode, SocketFileAccess.parseMode(socketMode) == nil {
            throw ValidationError("--socket-mode '\(socketMode)' is not octal permission bits (such as 660).")
        }
        if tap != nil, mode != .tap { throw ValidationError("--tap needs --mode tap.") }
        if let tap, tap.utf8.count > 15 || tap.contains("/") || tap.contains(" ") {
            throw ValidationError("--tap '\(tap)' is not an interface name (at most 15 characters, no '/' or spaces).")
        }
        guard duration >= 0, statsPeriod >= 0 else { throw ValidationError("--duration and --stats-period must not be negative.") }
        guard (1...64).contains(queues) else { throw ValidationError("--queues must be 1…64.") }
        if let mac, MACAddress(mac) == nil { throw ValidationError("--mac '\(mac)' is not a MAC address (aa:bb:cc:dd:ee:ff).") }
        guard (VirtioNetMTU.minimum...VirtioNetMTU.maximum).contains(mtu) else {
            throw ValidationError("--mtu must be \(VirtioNetMTU.minimum)…\(VirtioNetMTU.maximum).")
        }
    }

    func run() throws {
        signal(SIGINT) { _ in stopRequested.store(true, ordering: .relaxed) }
        signal(SIGTERM) { _ in stopRequested.store(true, ordering: .relaxed) }
        let backend: VhostUserBackend
        do throws(VirtioError) {
            var configuration = VhostUserBackend.Configuration(socketPath: socket, mode: mode)
            configuration.connectionMode = client ? .client : .server
            configuration.queuePairs = queues
            configuration.macAddress = mac.flatMap(MACAddress.init)
            configuration.mtu = mtu
            configuration.tapInterface = tap
            configuration.socketAccess = SocketFileAccess(mode: socketMode.flatMap(SocketFileAccess.parseMode), group: socketGroup)
            if noConfigSpace { configuration.offeredProtocolFeatures.remove(.config) }
            LoggingSystem.bootstrap(StreamLogHandler.standardError)
            var logger = Logger(label: "vhost-user-backend")
            logger.logLevel = logLevel
            configuration.logger = logger
            if let cpu {
                try DedicatedThread.pinCurrentThread(to: cpu)  // fails early on a bad CPU number
                configuration.onServingThreadStart = { try? DedicatedThread.pinCurrentThread(to: cpu) }
            }
            backend = try VhostUserBackend(configuration: configuration)
            try backend.start()
        } catch {
            Console.error("vhost-user-backend: error: \(error)")
            throw ExitCode(2)
        }
        let target = backend.tapInterfaceName.map { "tap \($0)" } ?? mode.rawValue
        print("vhost-user-backend: \(target), \(client ? "connecting to" : "listening on") \(socket)")
        Console.flush()
        let start = MonotonicClock.nanoseconds()
        let end = duration > 0 ? MonotonicClock.deadline(MonotonicClock.nanoseconds(seconds: duration), after: start) : .max
        var stats = PeriodicSchedule(period: MonotonicClock.nanoseconds(seconds: statsPeriod), start: start)
        while !stopRequested.load(ordering: .relaxed) {
            MonotonicClock.sleep(milliseconds: 50)
            let now = MonotonicClock.nanoseconds()
            if now >= end { break }
            // Once per due period, however many a pause (SIGSTOP, a frozen cgroup) skipped.
            if stats.isDue(now: now) { printTotals(backend.statistics) }
        }
        backend.stop()
        printTotals(backend.statistics)
    }

    private func printTotals(_ s: BackendStatistics) {
        let active = s.framesReceivedByQueuePair.lastIndex { $0 > 0 }.map { $0 + 1 } ?? 0
        let perPair = active > 1 ? "  per pair received \(s.framesReceivedByQueuePair.prefix(active).map(String.init).joined(separator: "/"))" : ""
        print("connections \(s.connections)  received \(s.framesReceived) (\(s.bytesReceived) bytes)  sent \(s.framesSent)  drops \(s.drops)  protocol errors \(s.protocolErrors)"
              + perPair + (s.lastError.map { "  last error: \($0)" } ?? ""))
        Console.flush()
    }
}

extension BackendMode: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}
