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
        public var logger = Logger(label: "swift-virtio-user.switch")
        /// Runs on the serving thread before it serves (to pin it to a CPU).
        public var onServingThreadStart: (@Sendable () -> Void)?

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
            throw VirtioError(.invalidArgument, "A switch needs 2…64 ports; \(configuration.portPaths.count) were given.")
        }
        guard Set(configuration.portPaths).count == configuration.portPaths.count else {
            throw VirtioError(.invalidArgument, "Two ports were given the same socket path.")
        }
        guard (1...1024).contains(configuration.burstSize) else {
            throw VirtioError(.invalidArgument, "Switch burst size \(configuration.burstSize) must be 1…1024.")
        }
        guard (1...4096).contains(configuration.addressesPerPort) else {
            throw VirtioError(.invalidArgument, "Addresses per port \(configuration.addressesPerPort) must be 1…4096.")
        }
        guard configuration.addressAgeingMilliseconds >= 1 else {
            throw VirtioError(.invalidArgument, "Address ageing \(configuration.addressAgeingMilliseconds) ms must be at least 1 ms.")
        }
        guard (1...10_000).contains(configuration.fullDestinationWaitMilliseconds) else {
            throw VirtioError(.invalidArgument, "The full-destination wait \(configuration.fullDestinationWaitMilliseconds) ms must be 1…10000.")
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
            guard current == nil else { throw VirtioError(.invalidState, "The switch is already serving.") }
            guard !core.stopping.load(ordering: .relaxed) else {
                throw VirtioError(.invalidState, "This switch was stopped; create a new one to serve again.")
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

/// The serving loop and what it shares with the public object.
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

    /// Per-round counters, added to `statistics` once per round (not per frame).
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

    /// What the serving loop keeps between rounds, in one place so each step takes it whole.
    private struct State {
        var connections: [BackendConnection?]
        var table: MACTable
        var tally: Tally
        var pressure: DestinationBackPressure
        /// A destination that broke its receive ring while a frame was switched to it: its
        /// session ends after the sender's burst, not the sender's.
        var failures: [VirtioError?]
        /// The round's time (monotonic nanoseconds): read once per round, not per frame.
        var now: UInt64 = MonotonicClock.nanoseconds()
    }

    /// Scratch for one frame: its destination and source addresses, and its destinations with
    /// the chains each takes; which ports got copies this burst.
    private struct Scratch {
        let addresses = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        let targets: UnsafeMutablePointer<Int>
        let chains: UnsafeMutablePointer<Int>
        let segments: UnsafeMutablePointer<Int>
        let touched: UnsafeMutablePointer<Bool>

        init(ports: Int) {
            targets = .allocate(capacity: ports)
            chains = .allocate(capacity: ports)
            segments = .allocate(capacity: ports)
            touched = .allocate(capacity: ports)
            touched.initialize(repeating: false, count: ports)
        }

        func deallocate() {
            addresses.deallocate()
            targets.deallocate()
            chains.deallocate()
            segments.deallocate()
            touched.deallocate()
        }
    }

    func serve() {
        configuration.onServingThreadStart?()
        let count = configuration.portPaths.count
        var state = State(
            connections: Array(repeating: nil, count: count),
            table: MACTable(
                ports: count, limitPerPort: configuration.addressesPerPort,
                ageingNanoseconds: UInt64(configuration.addressAgeingMilliseconds) * 1_000_000),
            tally: Tally(ports: count),
            pressure: DestinationBackPressure(ports: count, waitNanoseconds: UInt64(configuration.fullDestinationWaitMilliseconds) * 1_000_000),
            failures: Array(repeating: nil, count: count))
        let scratch = Scratch(ports: count)
        defer { scratch.deallocate() }
        // Aged addresses are swept at most once a second (more often for a shorter ageing).
        let sweepInterval = min(1_000_000_000, state.table.ageingNanoseconds)
        var lastSweep = state.now
        var idlePolls = 0
        var iterations = 0
        var faultsSeen = cvs_guard_total_faults()
        while !stopping.load(ordering: .relaxed) {
            iterations &+= 1
            var handled = 0
            state.now = MonotonicClock.nanoseconds()
            if state.now &- lastSweep >= sweepInterval {
                lastSweep = state.now
                state.table.expire(now: state.now)
                learned.store(state.table.count, ordering: .relaxed)
            }
            // One load per round: did a front-end shrink its memory under us (a guarded fault)?
            let faults = cvs_guard_total_faults()
            if faults != faultsSeen {
                faultsSeen = faults
                for port in 0..<count {
                    guard let connection = state.connections[port] else { continue }
                    do throws(VirtioError) { try connection.memory.checkTruncation() } catch { end(port, &state, error) }
                }
            }
            for port in 0..<count {
                guard let source = state.connections[port], source.vrings[1].isLive else { continue }
                do throws(VirtioError) {
                    handled += try source.dataPath.takeTransmitted(burst: configuration.burstSize) { (chain, length) throws(VirtioError) in
                        try route(from: port, chain, length, &state, scratch)
                    }
                } catch {
                    end(port, &state, error)
                }
                for other in 0..<count {
                    if let failure = state.failures[other] {
                        state.failures[other] = nil
                        scratch.touched[other] = false
                        end(other, &state, failure)
                    }
                }
                // Copies become visible on the ports that got them, after the sender's
                // completions (published by takeTransmitted).
                for other in 0..<count where scratch.touched[other] {
                    scratch.touched[other] = false
                    do throws(VirtioError) { try state.connections[other]?.dataPath.publishReceived() } catch {
                        end(other, &state, error)
                    }
                }
            }
            if state.tally.any { flush(&state.tally) }
            if handled == 0 || iterations & 255 == 0 {
                serviceControl(&state)
            }
            if handled > 0 {
                idlePolls = 0
                continue
            }
            idlePolls &+= 1
            if idlePolls >= configuration.idlePollsBeforeSleep, sleepUntilKicked(state.connections) { idlePolls = 0 }
        }
        for port in 0..<count where state.connections[port] != nil {
            configuration.logger.info("session ended: the switch is stopping", metadata: ["port": "\(port)"])
        }
    }

    /// Sends one frame from `port` where it belongs; false to hold it back (a destination has
    /// no room yet, and has not made its senders wait too long).
    private func route(
        from port: Int, _ chain: HostChain, _ length: Int, _ state: inout State, _ scratch: Scratch
    ) throws(VirtioError) -> Bool {
        state.tally.any = true
        guard BackendDataPath.readAddresses(chain, into: scratch.addresses) else {
            // Shorter than two addresses: nothing to switch on.
            state.tally.received[port] &+= 1
            state.tally.dropped[port] &+= 1
            return true
        }
        let destination = MACTable.key(scratch.addresses)
        let sourceKey = MACTable.key(scratch.addresses + 6)
        let before = state.table.count
        guard state.table.learn(sourceKey, port: port, now: state.now) else {
            // Another port's address: taken, never forwarded.
            state.tally.received[port] &+= 1
            state.tally.spoofed[port] &+= 1
            return true
        }
        if state.table.count != before { learned.store(state.table.count, ordering: .relaxed) }
        // Destinations: the learned port, or every other connected port.
        var targetCount = 0
        var flooded = false
        if !MACTable.isGroup(destination), let known = state.table.port(of: destination, now: state.now) {
            if known != port, state.connections[known] != nil {
                scratch.targets[0] = known
                targetCount = 1
            }
        } else {
            flooded = true
            for other in state.connections.indices where other != port && state.connections[other] != nil {
                scratch.targets[targetCount] = other
                targetCount &+= 1
            }
        }
        // Every destination with room, or hold the frame back.
        var k = 0
        while k < targetCount {
            let other = scratch.targets[k]
            guard state.failures[other] == nil, let target = state.connections[other] else { scratch.chains[k] = 0; k &+= 1; continue }
            let room: BackendDataPath.ReceiveRoom
            do throws(VirtioError) { room = try target.dataPath.receiveRoom(length: length) } catch {
                state.failures[other] = error
                scratch.chains[k] = 0
                k &+= 1
                continue
            }
            switch room {
            case .ready(let chains, let segments):
                scratch.chains[k] = chains
                scratch.segments[k] = segments
                state.pressure.hadRoom(other)
            // A unicast frame waits for its port, for a bounded time; a flooded copy does not
            // wait for a port that is not taking frames (one stuck front-end must not stop the
            // others).
            case .full:
                if !flooded, state.pressure.holds(for: other, now: state.now) { return false }
                scratch.chains[k] = -1
            case .tooLong: scratch.chains[k] = -1
            // A front-end still setting up its rings is not a destination yet: a flooded copy
            // skips it; a unicast frame for it is dropped and counted.
            case .absent: scratch.chains[k] = flooded ? 0 : -1
            }
            k &+= 1
        }
        k = 0
        while k < targetCount {
            let other = scratch.targets[k]
            if scratch.chains[k] > 0, let target = state.connections[other] {
                // Both chains were translated (and so checked) before: the sender's when taken,
                // the receiver's when its room was found. Nothing here can fail.
                target.dataPath.deliver(chain, length: length, chains: scratch.chains[k], segments: scratch.segments[k])
                scratch.touched[other] = true
                state.tally.sent[other] &+= 1
            } else if scratch.chains[k] < 0 {
                state.tally.dropped[other] &+= 1
            }
            k &+= 1
        }
        state.tally.received[port] &+= 1
        if flooded { state.tally.flooded[port] &+= 1 }
        return true
    }

    private func flush(_ tally: inout Tally) {
        statistics.withLock { ports in
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

    /// Accepts front-ends on free ports and handles pending control messages.
    private func serviceControl(_ state: inout State) {
        guard let listeners = listeners.withLock({ $0 }) else { return }
        for port in state.connections.indices {
            if let connection = state.connections[port] {
                do throws(VirtioError) {
                    try connection.handlePendingMessages()
                    let up = connection.vrings[0].isLive && connection.vrings[1].isLive
                    statistics.withLock { if $0[port].isUp != up { $0[port].isUp = up } }
                } catch {
                    end(port, &state, error)
                }
                continue
            }
            do throws(VirtioError) {
                guard let socket = try listeners[port].accept(milliseconds: 0) else { continue }
                state.pressure.reset(port)
                state.connections[port] = BackendConnection(
                    socket: socket, offeredFeatures: configuration.offeredFeatures,
                    offeredProtocolFeatures: configuration.offeredFeatures.contains(.vhostUserProtocolFeatures)
                        ? [.replyAck, .status] : [],
                    queuePairs: 1)
                statistics.withLock { $0[port].connections &+= 1 }
                configuration.logger.info("front-end connected", metadata: ["port": "\(port)", "socket": "\(configuration.portPaths[port])"])
            } catch {
                configuration.logger.warning("accepting a front-end failed", metadata: ["port": "\(port)", "error": "\(error.message)"])
            }
        }
    }

    /// Ends port `port`'s session: its addresses are forgotten, the port is free again.
    private func end(_ port: Int, _ state: inout State, _ error: VirtioError) {
        state.connections[port] = nil
        statistics.withLock { $0[port].isUp = false }
        state.table.forget(port: port)
        learned.store(state.table.count, ordering: .relaxed)
        if error.kind == .peerGone {
            configuration.logger.info("front-end disconnected", metadata: ["port": "\(port)"])
        } else {
            if error.kind == .protocolViolation { statistics.withLock { $0[port].protocolErrors &+= 1 } }
            configuration.logger.error("session closed", metadata: ["port": "\(port)", "error": "\(error.message)"])
        }
    }

    /// Sleeps until a kick, a message or a new front-end (at most 100 ms); work is a frame on
    /// some port's transmit ring. Returns false when nothing happened.
    private func sleepUntilKicked(_ connections: [BackendConnection?]) -> Bool {
        let sessions = connections.compactMap { $0 }
        let listening = listeners.withLock { $0 }?.map(\.descriptor.raw) ?? []
        let woken = try? IdleSleep.sleep(sessions, extra: listening) {
            sessions.contains { ($0.vrings[1].ring?.availableCount() ?? 0) > 0 }
        }
        return woken ?? false
    }
}
