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
/// A unicast frame whose port has no room holds its sender back (its frames wait on its
/// transmit ring) rather than being lost; a flooded copy for a port with no room is dropped
/// for that port and counted, so one stuck front-end cannot stop the others, as is a frame too
/// long for a port that cannot take it (no mergeable buffers). One thread serves every port,
/// allocating nothing per frame. Ports serve split or packed rings, as each front-end asks.
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
        /// Copies meant for it that it had no room for (flooded ones) or could never fit.
        public var dropped: UInt64 = 0
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
        var any = false

        init(ports: Int) {
            received = Array(repeating: 0, count: ports)
            sent = received
            flooded = received
            dropped = received
        }

        mutating func clear() {
            for i in received.indices {
                received[i] = 0
                sent[i] = 0
                flooded[i] = 0
                dropped[i] = 0
            }
            any = false
        }
    }

    func serve() {
        configuration.onServingThreadStart?()
        let count = configuration.portPaths.count
        var connections = [BackendConnection?](repeating: nil, count: count)
        var table = MACTable()
        var tally = Tally(ports: count)
        // A destination that broke its receive ring while a frame was switched to it: its
        // session ends after the round, not the sender's.
        var failures = [VirtioError?](repeating: nil, count: count)
        // Scratch for one frame's destination and source addresses, and its destinations.
        let addresses = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        let targets = UnsafeMutablePointer<Int>.allocate(capacity: count)
        let chains = UnsafeMutablePointer<Int>.allocate(capacity: count)
        let touched = UnsafeMutablePointer<Bool>.allocate(capacity: count)
        touched.initialize(repeating: false, count: count)
        defer {
            addresses.deallocate()
            targets.deallocate()
            chains.deallocate()
            touched.deallocate()
        }
        var idlePolls = 0
        var iterations = 0
        var faultsSeen = cvs_guard_total_faults()
        while !stopping.load(ordering: .relaxed) {
            iterations &+= 1
            var handled = 0
            // One load per round: did a front-end shrink its memory under us (a guarded fault)?
            let faults = cvs_guard_total_faults()
            if faults != faultsSeen {
                faultsSeen = faults
                for port in 0..<count {
                    guard let connection = connections[port] else { continue }
                    do throws(VirtioError) { try connection.memory.checkTruncation() } catch { end(port, &connections, &table, error) }
                }
            }
            for port in 0..<count {
                guard let source = connections[port], source.vrings[1].isLive else { continue }
                do throws(VirtioError) {
                    handled += try source.takeTransmitted(burst: configuration.burstSize) { (segments, segmentCount, length) throws(VirtioError) in
                        try route(
                            from: port, source, segments, segmentCount, length, connections: connections, table: &table,
                            tally: &tally, failures: &failures, scratch: (addresses, targets, chains, touched))
                    }
                } catch {
                    end(port, &connections, &table, error)
                }
                for other in 0..<count {
                    if let failure = failures[other] {
                        failures[other] = nil
                        touched[other] = false
                        end(other, &connections, &table, failure)
                    }
                }
                // Copies become visible on the ports that got them, after the sender's
                // completions (published by takeTransmitted).
                for other in 0..<count where touched[other] {
                    touched[other] = false
                    do throws(VirtioError) { try connections[other]?.publishReceived() } catch {
                        end(other, &connections, &table, error)
                    }
                }
            }
            if tally.any { flush(&tally) }
            if handled == 0 || iterations & 255 == 0 {
                serviceControl(&connections, &table)
            }
            if handled > 0 {
                idlePolls = 0
                continue
            }
            idlePolls &+= 1
            if idlePolls >= configuration.idlePollsBeforeSleep, sleepUntilKicked(connections) { idlePolls = 0 }
        }
        for port in 0..<count where connections[port] != nil {
            configuration.logger.info("session ended: the switch is stopping", metadata: ["port": "\(port)"])
        }
    }

    /// Sends one frame from `port` where it belongs; false to hold it back (a destination has
    /// no room yet).
    private func route(
        from port: Int, _ source: BackendConnection, _ segments: UnsafeMutablePointer<ChainSegment>, _ segmentCount: Int,
        _ length: Int, connections: [BackendConnection?], table: inout MACTable, tally: inout Tally,
        failures: inout [VirtioError?],
        scratch: (addresses: UnsafeMutableRawPointer, targets: UnsafeMutablePointer<Int>, chains: UnsafeMutablePointer<Int>, touched: UnsafeMutablePointer<Bool>)
    ) throws(VirtioError) -> Bool {
        guard try source.readAddresses(segments, segmentCount, into: scratch.addresses) else {
            // Shorter than two addresses: nothing to switch on.
            tally.received[port] &+= 1
            tally.dropped[port] &+= 1
            tally.any = true
            return true
        }
        let destination = MACTable.key(scratch.addresses)
        let sourceKey = MACTable.key(scratch.addresses + 6)
        let before = table.count
        table.learn(sourceKey, port: port)
        if table.count != before { learned.store(table.count, ordering: .relaxed) }
        // Destinations: the learned port, or every other connected port.
        var targetCount = 0
        var flooded = false
        if !MACTable.isGroup(destination), let known = table.port(of: destination) {
            if known != port, connections[known] != nil {
                scratch.targets[0] = known
                targetCount = 1
            }
        } else {
            flooded = true
            for other in connections.indices where other != port && connections[other] != nil {
                scratch.targets[targetCount] = other
                targetCount &+= 1
            }
        }
        // Every destination with room, or hold the frame back.
        var k = 0
        while k < targetCount {
            let other = scratch.targets[k]
            guard failures[other] == nil, let target = connections[other] else { scratch.chains[k] = 0; k &+= 1; continue }
            let room: BackendConnection.ReceiveRoom
            do throws(VirtioError) { room = try target.receiveRoom(length: length) } catch {
                failures[other] = error
                scratch.chains[k] = 0
                k &+= 1
                continue
            }
            switch room {
            case .ready(let chains): scratch.chains[k] = chains
            // A unicast frame waits for its port; a flooded copy does not wait for a port that
            // is not taking frames (one stuck front-end must not stop the others).
            case .full: if flooded { scratch.chains[k] = -1 } else { return false }
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
            if scratch.chains[k] > 0, let target = connections[other] {
                do throws(VirtioError) {
                    try target.deliver(segments, segmentCount, from: source.memory, length: length, chains: scratch.chains[k])
                    scratch.touched[other] = true
                    tally.sent[other] &+= 1
                } catch {
                    // The sender's segments were all checked when taken (takeTransmitted), so a
                    // failure here is the receiving front-end's.
                    failures[other] = error
                }
            } else if scratch.chains[k] < 0 {
                tally.dropped[other] &+= 1
            }
            k &+= 1
        }
        tally.received[port] &+= 1
        if flooded { tally.flooded[port] &+= 1 }
        tally.any = true
        return true
    }

    private func flush(_ tally: inout Tally) {
        statistics.withLock { ports in
            for i in ports.indices {
                ports[i].received &+= tally.received[i]
                ports[i].sent &+= tally.sent[i]
                ports[i].flooded &+= tally.flooded[i]
                ports[i].dropped &+= tally.dropped[i]
            }
        }
        tally.clear()
    }

    /// Accepts front-ends on free ports and handles pending control messages.
    private func serviceControl(_ connections: inout [BackendConnection?], _ table: inout MACTable) {
        guard let listeners = listeners.withLock({ $0 }) else { return }
        for port in connections.indices {
            if let connection = connections[port] {
                do throws(VirtioError) {
                    try connection.handlePendingMessages()
                    let up = connection.vrings[0].isLive && connection.vrings[1].isLive
                    statistics.withLock { if $0[port].isUp != up { $0[port].isUp = up } }
                } catch {
                    end(port, &connections, &table, error)
                }
                continue
            }
            do throws(VirtioError) {
                guard let socket = try listeners[port].accept(milliseconds: 0) else { continue }
                connections[port] = BackendConnection(
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
    private func end(_ port: Int, _ connections: inout [BackendConnection?], _ table: inout MACTable, _ error: VirtioError) {
        connections[port] = nil
        statistics.withLock { $0[port].isUp = false }
        table.forget(port: port)
        learned.store(table.count, ordering: .relaxed)
        if error.kind == .peerGone {
            configuration.logger.info("front-end disconnected", metadata: ["port": "\(port)"])
        } else {
            if error.kind == .protocolViolation { statistics.withLock { $0[port].protocolErrors &+= 1 } }
            configuration.logger.error("session closed", metadata: ["port": "\(port)", "error": "\(error.message)"])
        }
    }

    /// Sleeps until a kick, a message or a new front-end (at most 100 ms), after asking every
    /// port's front-end for kicks and looking once more. Returns false when nothing happened.
    private func sleepUntilKicked(_ connections: [BackendConnection?]) -> Bool {
        let rings = connections.compactMap { $0 }.flatMap { $0.vrings.compactMap(\.ring) }
        for ring in rings { ring.setNotificationsEnabled(true) }
        defer { for ring in rings { ring.setNotificationsEnabled(false) } }
        for connection in connections.compactMap({ $0 }) where (connection.vrings[1].ring?.availableCount() ?? 0) > 0 { return true }
        var fds: [Int32] = []
        for connection in connections.compactMap({ $0 }) {
            fds.append(connection.channel.socket.raw)
            fds += connection.vrings.compactMap { $0.kick?.descriptor.raw }
        }
        if let listeners = listeners.withLock({ $0 }) { fds += listeners.map(\.descriptor.raw) }
        let ready = (try? Poll.waitAny(fds, milliseconds: 100)) ?? []
        for connection in connections.compactMap({ $0 }) {
            for vring in connection.vrings { vring.kick?.drainPeer() }
        }
        return !ready.isEmpty
    }
}
