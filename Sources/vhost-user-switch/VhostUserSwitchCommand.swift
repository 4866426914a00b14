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
struct VhostUserSwitchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vhost-user-switch",
        abstract: "A learning Ethernet switch between vhost-user front-ends: one socket per port, no kernel in the path.",
        discussion: """
        Listens on every --port socket and serves one front-end (ours, or DPDK's virtio-user) on each. \
        A frame goes to the port its destination MAC was last seen on; broadcast, multicast and unknown \
        destinations go to every other connected port. Ports are confined from each other: an address \
        stays with the port that taught it until that session ends or the address ages out (frames \
        from another port claiming it are dropped, counted as spoofed); each port learns at most \
        --addresses-per-port addresses; a port without room holds its senders back at most \
        --full-destination-wait ms, then its frames are dropped. Runs until SIGINT/SIGTERM or \
        --duration, then prints per-port totals. \
        Exit status: 0; 2 on an error (a one-line message on stderr); 64 for a bad or unknown option.
        """)

    @Option(help: "A port's socket path (repeat: 2…64 ports). A stale socket there is replaced. Longer than 107 bytes is fine; @NAME is an abstract socket.")
    var port: [String] = []

    @Option(help: "Seconds to serve; 0 serves until SIGINT/SIGTERM.")
    var duration: Double = 0

    @Option(name: .customLong("stats-period"), help: "Seconds between stats lines; 0 for none.")
    var statsPeriod: Double = 0

    @Option(name: .customLong("addresses-per-port"), help: "Source MAC addresses one port may have learned at once (1…4096); frames to addresses beyond it are flooded.")
    var addressesPerPort = 256

    @Option(name: .customLong("address-ageing"), help: "Seconds a learned address lasts without a frame from it.")
    var addressAgeing: Double = 300

    @Option(name: .customLong("full-destination-wait"), help: "Milliseconds a unicast frame for a port without receive buffers may hold its sender back before that port's frames are dropped instead (1…10000).")
    var fullDestinationWait = 100

    @Option(help: "Pin the serving thread to this CPU.")
    var cpu: Int?

    @Option(name: .customLong("socket-mode"), help: "Permission bits of the listening socket file, in octal (such as 660), for front-ends running as another user.")
    var socketMode: String?

    @Option(name: .customLong("socket-group"), help: "Group (name or number) of the listening socket file: with --socket-mode 660, its members may connect.")
    var socketGroup: String?

    @Option(name: .customLong("log-level"), help: "Port log messages to stderr at this level and above: trace, debug, info (a front-end connected or left), notice, warning, error (a session closed for a protocol error), critical.")
    var logLevel: Logger.Level = .notice

    func validate() throws {
        if let socketMode, SocketFileAccess.parseMode(socketMode) == nil {
            throw ValidationError("--socket-mode '\(socketMode)' is not octal permission bits (such as 660).")
        }
        guard (2...64).contains(port.count) else { throw ValidationError("Give 2…64 --port sockets; \(port.count) given.") }
        guard Set(port).count == port.count else { throw ValidationError("Each --port needs its own socket path.") }
        guard duration >= 0, statsPeriod >= 0 else { throw ValidationError("--duration and --stats-period must not be negative.") }
        guard (1...4096).contains(addressesPerPort) else { throw ValidationError("--addresses-per-port must be 1…4096.") }
        guard addressAgeing >= 0.001, addressAgeing <= 86_400 * 365 else { throw ValidationError("--address-ageing must be 0.001 seconds to a year.") }
        guard (1...10_000).contains(fullDestinationWait) else { throw ValidationError("--full-destination-wait must be 1…10000 ms.") }
    }

    func run() throws {
        signal(SIGINT) { _ in stopRequested.store(true, ordering: .relaxed) }
        signal(SIGTERM) { _ in stopRequested.store(true, ordering: .relaxed) }
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let fabric: VhostUserSwitch
        do throws(VirtioError) {
            var configuration = VhostUserSwitch.Configuration(portPaths: port)
            configuration.socketAccess = SocketFileAccess(mode: socketMode.flatMap(SocketFileAccess.parseMode), group: socketGroup)
            configuration.addressesPerPort = addressesPerPort
            configuration.addressAgeingMilliseconds = Int(addressAgeing * 1000)
            configuration.fullDestinationWaitMilliseconds = fullDestinationWait
            var logger = Logger(label: "vhost-user-switch")
            logger.logLevel = logLevel
            configuration.logger = logger
            if let cpu {
                try DedicatedThread.pinCurrentThread(to: cpu)  // fails early on a bad CPU number
                configuration.onServingThreadStart = { try? DedicatedThread.pinCurrentThread(to: cpu) }
            }
            fabric = try VhostUserSwitch(configuration: configuration)
            try fabric.start()
        } catch {
            Console.error("vhost-user-switch: error: \(error)")
            throw ExitCode(2)
        }
        print("vhost-user-switch: \(port.count) ports: \(port.joined(separator: ", "))")
        Console.flush()
        let start = MonotonicClock.nanoseconds()
        let end = duration > 0 ? MonotonicClock.deadline(MonotonicClock.nanoseconds(seconds: duration), after: start) : .max
        var stats = PeriodicSchedule(period: MonotonicClock.nanoseconds(seconds: statsPeriod), start: start)
        while !stopRequested.load(ordering: .relaxed) {
            MonotonicClock.sleep(milliseconds: 50)
            let now = MonotonicClock.nanoseconds()
            if now >= end { break }
            // Once per due period, however many a pause (SIGSTOP, a frozen cgroup) skipped.
            if stats.isDue(now: now) { printTotals(fabric) }
        }
        fabric.stop()
        printTotals(fabric)
    }

    private func printTotals(_ fabric: VhostUserSwitch) {
        for (index, port) in fabric.statistics.enumerated() {
            print("port \(index): received \(port.received)  sent \(port.sent)  flooded \(port.flooded)  dropped \(port.dropped)  spoofed \(port.spoofed)  sessions \(port.connections)  protocol errors \(port.protocolErrors)")
        }
        print("learned addresses \(fabric.learnedAddresses)")
        Console.flush()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
