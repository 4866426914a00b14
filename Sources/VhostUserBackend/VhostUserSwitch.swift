#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import Logging
import Synchronization
import VirtioCore

/// A learning Ethernet switch between vhost-user front-ends: one socket per port, one front-end
/// per port at a time, frames forwarded by destination MAC with no kernel in the path —
/// container-to-container IPC over shared memory.
///
/// It learns each source MAC's port, sends a frame for a known unicast address to that port
/// only, and floods broadcast, multicast and unknown destinations to every other connected port.
/// One thread serves every port, allocating nothing per frame. Ports serve split or packed
/// rings, as each front-end asks.
///
/// Every port is a tenant nobody trusts, and none can take from another:
/// - an address belongs to the port that taught it until that port's session ends or the
///   address ages out; another port's frames from it are dropped and counted (``PortStatistics/spoofed``);
/// - a port holds at most ``Configuration/addressesPerPort`` addresses, and the table has room
///   for every port's share;
/// - a unicast frame whose port has no room holds its sender back at most
///   ``Configuration/fullDestinationWaitMilliseconds`` (back-pressure, not loss, for a brief
///   hiccup); then that port's frames are dropped and counted while it stays full, so a
///   front-end that posts no buffers costs only its own frames. A flooded copy for a port with
///   no room is dropped at once, as is a frame too long for a port that cannot take it;
/// - a port's control messages must each arrive within 100 ms of their first byte, its
///   replies leave within 100 ms, and it gets 16 messages per round: it delays the others by
///   at most about 100 ms, once, before its session is closed.
public final class VhostUserSwitch: Sendable {
    /// What to serve.
    public struct Configuration: Sendable {
        /// One socket path per port (2…64); each is listened on, replacing a stale socket.
        public var portPaths: [String]
        /// Every port's socket file mode and group, for front-ends that run as other users.
        public var socketAccess = SocketFileAccess()
        /// Frames taken from one port per round.
        public var burstSize = 32
        /// Empty polls before the thread sleeps on kicks.
        public var idlePollsBeforeSleep = 20_000
        /// Features offered to front-ends (no offloads: frames pass between front-ends that may
        /// have negotiated different ones).
        public var offeredFeatures: VirtioFeatures = [
            .version1, .vhostUserProtocolFeatures, .netMergeableRxBuffers, .ringIndirectDescriptors,
            .ringEventIndex, .ringPacked, .inOrder,
        ]
        /// Source addresses one port may have learned at once (1…4,096); beyond it, new
        /// addresses are not learned and frames to them are flooded. The table is sized for
        /// every port at this limit (64 ports × 4,096: 10 MiB), allocated once.
        public var addressesPerPort = 256
        /// How long a learned address lasts without a frame from it (OVS's default: 300 s).
        public var addressAgeingMilliseconds = 300_000
        /// How long a unicast frame for a port without receive buffers may hold its sender
        /// back before that port's frames are dropped instead (1…10,000).
        public var fullDestinationWaitMilliseconds = 100
        /// Where port events go: a front-end connected or left, a session closed for an error.
        /// Silent unless you pass one (swift-log's guidance for libraries).
        public var logger = Logger(label: "swift-virtio-user.switch") { _ in SwiftLogNoOpLogHandler() }
        /// Runs on the serving thread before it serves (to pin it to a CPU).
        package var onServingThreadStart: (@Sendable () -> Void)?

        public init(portPaths: [String]) {
            self.portPaths = portPaths
        }
    }

    /// Counters of one port. Received: frames its front-end sent into the switch; sent: frames
    /// the switch put on its receive ring.
    public struct PortStatistics: Sendable, Equatable {
        public var received: UInt64 = 0
        public var sent: UInt64 = 0
        /// Frames it sent that were flooded (broadcast, multicast, unknown destination).
        public var flooded: UInt64 = 0
        /// Copies meant for it that it had no room for (flooded ones, or unicast ones after the
        /// wait) or could never fit.
        public var dropped: UInt64 = 0
        /// Frames it sent from a source address learned on another port: dropped.
        public var spoofed: UInt64 = 0
        /// Sessions it served.
        public var connections: UInt64 = 0
        public var protocolErrors: UInt64 = 0
        /// A front-end is connected and its rings run: frames can reach it.
        public var isUp = false
    }

    public let configuration: Configuration
    private let core: SwitchCore
    private let thread = Locked<DedicatedThread?>(nil)

    /// Binds every port's socket. Serving starts with ``start()``.
    public init(configuration: Configuration) throws(VirtioError) {
        guard (2...64).contains(configuration.portPaths.count) else {
            throw .invalid("portPaths.count", configuration.portPaths.count, "a switch needs 2…64 ports")
        }
        guard Set(configuration.portPaths).count == configuration.portPaths.count else {
            throw .invalid("portPaths", configuration.portPaths.joined(separator: ", "), "each port needs its own socket path")
        }
        guard (1...1024).contains(configuration.burstSize) else {
            throw .invalid("burstSize", configuration.burstSize, "1…1024")
        }
        guard (1...4096).contains(configuration.addressesPerPort) else {
            throw .invalid("addressesPerPort", configuration.addressesPerPort, "1…4096")
        }
        guard configuration.addressAgeingMilliseconds >= 1 else {
            throw .invalid("addressAgeingMilliseconds", configuration.addressAgeingMilliseconds, "at least 1 ms")
        }
        guard (1...10_000).contains(configuration.fullDestinationWaitMilliseconds) else {
            throw .invalid("fullDestinationWaitMilliseconds", configuration.fullDestinationWaitMilliseconds, "1…10000 ms")
        }
        var listeners: [UnixListener] = []
        for path in configuration.portPaths { listeners.append(try UnixListener(path: path, access: configuration.socketAccess)) }
        self.configuration = configuration
        core = SwitchCore(configuration: configuration, listeners: listeners)
    }

    deinit { stop() }

    /// Per-port counters, in port order.
    public var statistics: [PortStatistics] { core.statistics.withLock { $0 } }

    /// Addresses learned now.
    public var learnedAddresses: Int { core.learned.load(ordering: .relaxed) }

    /// Starts serving on a dedicated thread.
    public func start() throws(VirtioError) {
        try thread.withLock { (current) throws(VirtioError) in
            guard current == nil else { throw .state(.alreadyRunning("The switch")) }
            guard !core.stopping.load(ordering: .relaxed) else {
                throw .state(.stopped("This switch"))
            }
            let core = self.core
            current = try DedicatedThread(name: "vhost-switch") { core.serve() }
        }
    }

    /// Stops serving, ends every session, and removes the sockets.
    public func stop() {
        core.stopping.store(true, ordering: .relaxed)
        let running = thread.withLock { current in
            defer { current = nil }
            return current
        }
        running?.join()
        core.closeListeners()
    }
}

/// What the serving thread shares with the public object.
final class SwitchCore: Sendable {
    let configuration: VhostUserSwitch.Configuration
    let listeners: Locked<[UnixListener]?>
    let stopping = Atomic<Bool>(false)
    let statistics: Locked<[VhostUserSwitch.PortStatistics]>
    let learned = Atomic<Int>(0)

    init(configuration: VhostUserSwitch.Configuration, listeners: [UnixListener]) {
        self.configuration = configuration
        self.listeners = Locked(listeners)
        statistics = Locked(Array(repeating: .init(), count: configuration.portPaths.count))
    }

    func closeListeners() {
        listeners.withLock { $0 = nil }
    }

    func serve() {
        configuration.onServingThreadStart?()
        let ports = SwitchPorts(core: self)
        ports.serve()
    }
}

/// The switch's side of the serving loop: one session per port, each a ``SwitchPort`` whose
/// frames this routes. Owned by the serving thread.
private final class SwitchPorts: ServingHost, FrameRouter {
    let core: SwitchCore
    var sessions: [BackendConnection?]
    var idlePollsBeforeSleep: Int { core.configuration.idlePollsBeforeSleep }
    var isStopping: Bool { core.stopping.load(ordering: .relaxed) }
    private let burst: Int
    private var table: MACTable
    private var tally: Tally
    private var pressure: DestinationBackPressure
    /// A destination that broke its receive ring while a frame was switched to it: its
    /// session ends after the sender's burst, not the sender's.
    private var failures: [VirtioError?]
    /// The round's time (monotonic nanoseconds): read once per round, not per frame.
    private var now: UInt64 = MonotonicClock.nanoseconds()
    /// Aged addresses are swept at most once a second (more often for a shorter ageing).
    private let sweepInterval: UInt64
    private var lastSweep: UInt64
    /// Scratch for one frame: its destination and source addresses, and its destinations with
    /// the chains each takes; which ports got copies this burst.
    private let addresses = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
    private let targets: UnsafeMutablePointer<Int>
    private let chains: UnsafeMutablePointer<Int>
    private let segments: UnsafeMutablePointer<Int>
    private let touched: UnsafeMutablePointer<Bool>

    init(core: SwitchCore) {
        let configuration = core.configuration
        let count = configuration.portPaths.count
        self.core = core
        burst = configuration.burstSize
        sessions = Array(repeating: nil, count: count)
        table = MACTable(
            ports: count, limitPerPort: configuration.addressesPerPort,
            ageingNanoseconds: MonotonicClock.nanoseconds(milliseconds: configuration.addressAgeingMilliseconds))
        tally = Tally(ports: count)
        pressure = DestinationBackPressure(ports: count, waitNanoseconds: MonotonicClock.nanoseconds(milliseconds: configuration.fullDestinationWaitMilliseconds))
        failures = Array(repeating: nil, count: count)
        sweepInterval = min(1_000_000_000, table.ageingNanoseconds)
        lastSweep = now
        targets = .allocate(capacity: count)
        chains = .allocate(capacity: count)
        segments = .allocate(capacity: count)
        touched = .allocate(capacity: count)
        touched.initialize(repeating: false, count: count)
    }

    deinit {
        addresses.deallocate()
        targets.deallocate()
        chains.deallocate()
        segments.deallocate()
        touched.deallocate()
    }

    func forwarding(_ slot: Int) -> SwitchPort<SwitchPorts> {
        SwitchPort(router: self, port: slot, burst: burst)
    }

    func beginRound() {
        now = MonotonicClock.nanoseconds()
        if now &- lastSweep >= sweepInterval {
            lastSweep = now
            table.expire(now: now)
            core.learned.store(table.count, ordering: .relaxed)
        }
    }

    /// Ends the destinations that failed during `slot`'s burst, then makes the copies visible
    /// on the ports that got them, after the sender's completions (which its burst published).
    func afterBurst(of slot: Int) {
        for other in 0..<sessions.count {
            if let failure = failures[other] {
                failures[other] = nil
                touched[other] = false
                end(other, failure)
            }
        }
        for other in 0..<sessions.count where touched[other] {
            touched[other] = false
            do throws(VirtioError) { try sessions[other]?.dataPath.publishReceived() } catch {
                end(other, error)
            }
        }
    }

    func endRound() {
        if tally.any { flush() }
    }

    /// Sends one frame from `port` where it belongs; false to hold it back (a destination has
    /// no room yet, and has not made its senders wait too long).
    func route(from port: Int, _ chain: HostChain, length: Int) throws(VirtioError) -> Bool {
        tally.any = true
        guard BackendDataPath.readAddresses(chain, into: addresses) else {
            // Shorter than two addresses: nothing to switch on.
            tally.received[port] &+= 1
            tally.dropped[port] &+= 1
            return true
        }
        let destination = MACTable.key(addresses)
        let sourceKey = MACTable.key(addresses + 6)
        let before = table.count
        guard table.learn(sourceKey, port: port, now: now) else {
            // Another port's address: taken, never forwarded.
            tally.received[port] &+= 1
            tally.spoofed[port] &+= 1
            return true
        }
        if table.count != before { core.learned.store(table.count, ordering: .relaxed) }
        // Destinations: the learned port, or every other connected port.
        var targetCount = 0
        var flooded = false
        if !MACTable.isGroup(destination), let known = table.port(of: destination, now: now) {
            if known != port, sessions[known] != nil {
                targets[0] = known
                targetCount = 1
            }
        } else {
            flooded = true
            for other in sessions.indices where other != port && sessions[other] != nil {
                targets[targetCount] = other
                targetCount &+= 1
            }
        }
        // Every destination with room, or hold the frame back.
        var k = 0
        while k < targetCount {
            let other = targets[k]
            guard failures[other] == nil, let target = sessions[other] else { chains[k] = 0; k &+= 1; continue }
            let room: ReceiveRoom
            do throws(VirtioError) { room = try target.dataPath.receiveRoom(length: length) } catch {
                failures[other] = error
                chains[k] = 0
                k &+= 1
                continue
            }
            switch room {
            case .ready(let chainCount, let segmentCount):
                chains[k] = chainCount
                segments[k] = segmentCount
                pressure.hadRoom(other)
            // A unicast frame waits for its port, for a bounded time; a flooded copy does not
            // wait for a port that is not taking frames (one stuck front-end must not stop the
            // others).
            case .full:
                if !flooded, pressure.holds(for: other, now: now) { return false }
                chains[k] = -1
            case .tooLong: chains[k] = -1
            // A front-end still setting up its rings is not a destination yet: a flooded copy
            // skips it; a unicast frame for it is dropped and counted.
            case .absent: chains[k] = flooded ? 0 : -1
            }
            k &+= 1
        }
        k = 0
        while k < targetCount {
            let other = targets[k]
            if chains[k] > 0, let target = sessions[other] {
                // Both chains were translated (and so checked) before: the sender's when taken,
                // the receiver's when its room was found. Nothing here can fail.
                target.dataPath.deliver(chain, length: length, chains: chains[k], segments: segments[k])
                touched[other] = true
                tally.sent[other] &+= 1
            } else if chains[k] < 0 {
                tally.dropped[other] &+= 1
            }
            k &+= 1
        }
        tally.received[port] &+= 1
        if flooded { tally.flooded[port] &+= 1 }
        return true
    }

    private func flush() {
        core.statistics.withLock { ports in
            for i in ports.indices {
                ports[i].received &+= tally.received[i]
                ports[i].sent &+= tally.sent[i]
                ports[i].flooded &+= tally.flooded[i]
                ports[i].dropped &+= tally.dropped[i]
                ports[i].spoofed &+= tally.spoofed[i]
            }
        }
        tally.clear()
    }

    func connect(_ slot: Int) -> BackendConnection? {
        guard let listeners = core.listeners.withLock({ $0 }) else { return nil }
        let configuration = core.configuration
        do throws(VirtioError) {
            guard let socket = try listeners[slot].accept(milliseconds: 0) else { return nil }
            pressure.reset(slot)
            core.statistics.withLock { $0[slot].connections &+= 1 }
            configuration.logger.info("front-end connected", metadata: ["port": "\(slot)", "socket": "\(configuration.portPaths[slot])"])
            return BackendConnection(
                socket: socket, offeredFeatures: configuration.offeredFeatures,
                offeredProtocolFeatures: configuration.offeredFeatures.contains(.vhostUserProtocolFeatures)
                    ? [.replyAck, .status] : [],
                queuePairs: 1)
        } catch {
            configuration.logger.warning("accepting a front-end failed", metadata: ["port": "\(slot)", "error": "\(error)"])
            return nil
        }
    }

    func connectDescriptor(_ slot: Int) -> Int32? {
        core.listeners.withLock { $0 }?[slot].descriptor.raw
    }

    func started(_ slot: Int, _ session: BackendConnection) throws(VirtioError) {}

    func serviced(_ slot: Int, _ session: BackendConnection) {
        let up = session.vrings[0].isLive && session.vrings[1].isLive
        core.statistics.withLock { if $0[slot].isUp != up { $0[slot].isUp = up } }
    }

    /// A port's session ended: its addresses are forgotten, the port is free again.
    func ended(_ slot: Int, _ session: BackendConnection, _ error: VirtioError?) {
        let logger = core.configuration.logger
        core.statistics.withLock { $0[slot].isUp = false }
        table.forget(port: slot)
        core.learned.store(table.count, ordering: .relaxed)
        guard let error else {
            logger.info("session ended: the switch is stopping", metadata: ["port": "\(slot)"])
            return
        }
        if error.isDeparture {
            logger.info("front-end disconnected", metadata: ["port": "\(slot)"])
        } else {
            if error.isPeerViolation { core.statistics.withLock { $0[slot].protocolErrors &+= 1 } }
            logger.error("session closed", metadata: ["port": "\(slot)", "error": "\(error)"])
        }
    }
}

/// Per-round counters of the switch, added to its statistics once per round (not per frame).
private struct Tally {
    var received: [UInt64]
    var sent: [UInt64]
    var flooded: [UInt64]
    var dropped: [UInt64]
    var spoofed: [UInt64]
    var any = false

    init(ports: Int) {
        received = Array(repeating: 0, count: ports)
        sent = received
        flooded = received
        dropped = received
        spoofed = received
    }

    mutating func clear() {
        for i in received.indices {
            received[i] = 0
            sent[i] = 0
            flooded[i] = 0
            dropped[i] = 0
            spoofed[i] = 0
        }
        any = false
    }
}
