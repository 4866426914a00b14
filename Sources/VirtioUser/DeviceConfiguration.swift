import Logging
import VirtioCore

extension VirtioUserDevice {
    /// Everything needed to create a device. Defaults match DPDK's virtio-user where it has one.
    public struct Configuration: Sendable {
        /// The vhost-user socket: the back-end's (it listens; we connect), or with
        /// ``connectionMode`` `.server` ours. A filesystem path — one longer than sun_path's
        /// 107 bytes is reached through its directory — or `@name` in Linux's abstract
        /// namespace (no file; the network namespace's processes may connect). In client mode,
        /// a path ending in `/` names a directory into which the back-end will put one socket
        /// (a directory a container gets mounted): start waits for it, as for any socket.
        public var socketPath: String
        /// Entries per virtqueue: a power of two from 64 to 32768.
        public var queueSize: Int = 256
        /// Receive refill batch and the default burst of the CLI: 1…queueSize.
        public var burstSize: Int = 32
        /// Queue pairs (1…``VirtioUserDevice/maximumQueuePairs``), each with its own receive
        /// and transmit ring and packet pool, driven by its own thread. More than 1 needs a
        /// back-end offering VIRTIO_NET_F_MQ and the MQ protocol feature with at least this
        /// many pairs (DPDK: `net_vhost0,…,queues=N`).
        public var queuePairs: Int = 1
        /// Negotiate mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF, DPDK's `mrg_rxbuf`,
        /// on by default there too): frames longer than one buffer then arrive over several
        /// (see ``PacketBuffer/segments``). Without it, a back-end drops frames that do not
        /// fit one buffer.
        public var mergeableReceiveBuffers = true
        /// Negotiate VIRTIO_RING_F_EVENT_IDX (DPDK's virtio-user never does; its vhost
        /// offers it): notifications are asked for with event indices rather than flags.
        /// Off by default: polling 64-byte frames into DPDK's vhost measured slower with it
        /// (Docs/PERFORMANCE.md), and interrupt mode works with flags too.
        public var eventIndex = false
        /// Negotiate VIRTIO_RING_F_INDIRECT_DESC: a transmitted frame of 2…8 buffers takes
        /// one ring descriptor pointing at a table in shared memory instead of a chain.
        public var indirectDescriptors = true
        /// Negotiate VIRTIO_F_IN_ORDER when the back-end offers it (DPDK's `in_order`, on by
        /// default there too): descriptors go out in ring order, so available slots are not
        /// rewritten lap after lap, and transmit completions are taken from the used index
        /// alone, without reading the used entries the back-end writes (Docs/PERFORMANCE.md).
        public var inOrder = true
        /// Negotiate VIRTIO_F_RING_PACKED (DPDK's `packed_vq`): packed virtqueues when the
        /// back-end offers them (ours and DPDK's vhost do), split ones otherwise. IN_ORDER is
        /// not negotiated with packed rings (each buffer is completed on its own).
        public var packedRing = false
        /// Offloads to negotiate (none by default, as DPDK asks for them only when the
        /// application does): checksum and TCP segmentation on transmit, their reports on
        /// receive. What the back-end also offers is in ``VirtioUserDevice/negotiatedFeatures``.
        public var offloads: Offloads = []
        /// Our MAC address. nil adopts the back-end's when it serves one (VIRTIO_NET_F_MAC with
        /// the CONFIG protocol feature, as our back-end with a MAC does), and otherwise picks a
        /// random locally administered one.
        public var macAddress: MACAddress?
        /// Our MTU (68…65535). When set, VIRTIO_NET_F_MTU is negotiated if offered and the
        /// back-end is told with NET_SET_MTU (NET_MTU protocol feature; DPDK's vhost accepts
        /// it). nil takes the back-end's MTU from its config space when it serves one, else
        /// 1500. The device reports it (``VirtioUserDevice/mtu``); frames up to
        /// ``VirtioUserDevice/maximumFrameLength`` still pass, whatever the MTU.
        public var mtu: Int?
        /// Where control-path events go: link up (with what was negotiated) and down (with
        /// why), negotiation failures, reconnection. The data path never logs. Silent unless
        /// you pass one (swift-log's guidance for libraries): `Logger(label: "my-app")` sends
        /// them to whatever `LoggingSystem` your app bootstrapped.
        public var logger = Logger(label: "swift-virtio-user.device") { _ in SwiftLogNoOpLogHandler() }
        /// Where the shared memory comes from.
        public var memory: MemoryBacking = .memfd
        /// With `.hugepages`, fall back to normal pages when the hugepage pool is too small
        /// (``VirtioUserDevice/memoryFallbackReason`` says so) instead of failing.
        public var fallbackToNormalPages = true
        /// Packet buffers in each queue pair's pool; nil sizes it for a full receive ring, a
        /// full transmit ring and 8 bursts in the caller's hands.
        public var poolSize: Int?
        /// Who listens on the socket: the back-end (`.client`, the default, as DPDK's
        /// virtio-user without `server=1`) or this device (`.server`: the back-end connects,
        /// as DPDK's vhost with `client=1`).
        public var connectionMode: ConnectionMode = .client
        /// Server mode: the permission bits and group of the socket file we listen on, so that
        /// a back-end running as another user (OVS as root is not one) may connect only if it
        /// is in that group. Set as soon as the socket is bound. Not for abstract sockets.
        public var socketAccess = SocketFileAccess()
        /// How long `start()` waits for the back-end: retrying the connection in client mode,
        /// waiting for it to connect in server mode.
        public var connectTimeoutMilliseconds = 5000
        /// After the back-end goes away, re-establish the session by ourselves: the link goes
        /// down, then comes back up once the back-end returns.
        public var reconnect = true
        /// Client mode: how long to keep trying to reconnect before giving up (the link then
        /// stays down until `start()` is called again). Server mode waits as long as it runs.
        public var reconnectTimeoutMilliseconds = 30_000
        /// How long each control-path reply may take.
        public var replyTimeoutMilliseconds = 5000

        /// A configuration for the back-end at `socketPath`, with defaults for the rest.
        public init(socketPath: String) {
            self.socketPath = socketPath
        }

        var effectivePoolSize: Int { poolSize ?? (2 * queueSize + 8 * burstSize) }

        func validate() throws(VirtioError) {
            guard SplitRingMemory.isValidSize(queueSize), queueSize >= 64 else {
                throw .invalid("queueSize", queueSize, "a power of two from 64 to 32768")
            }
            guard (1...queueSize).contains(burstSize) else {
                throw .invalid("burstSize", burstSize, "1…\(queueSize) (the queue size)")
            }
            guard effectivePoolSize >= queueSize + burstSize, effectivePoolSize <= 1 << 22 else {
                throw .invalid("poolSize", effectivePoolSize, "at least queue + burst size (\(queueSize + burstSize)) and at most 4194304")
            }
            guard (1...VirtioUserDevice.maximumQueuePairs).contains(queuePairs) else {
                throw .invalid("queuePairs", queuePairs, "1…\(VirtioUserDevice.maximumQueuePairs)")
            }
            guard effectivePoolSize * queuePairs <= 1 << 22 else {
                throw .invalid("poolSize", effectivePoolSize, "\(queuePairs) pools of it exceed 4194304 buffers in all; set a smaller poolSize")
            }
            if let mtu, !(VirtioNetMTU.minimum...VirtioNetMTU.maximum).contains(mtu) {
                throw .invalid("mtu", mtu, "\(VirtioNetMTU.minimum)…\(VirtioNetMTU.maximum)")
            }
            if connectionMode == .client && socketAccess != SocketFileAccess() {
                throw .invalid("socketAccess", "mode/group", "only with connectionMode .server: in client mode the back-end owns the socket file")
            }
            if connectionMode == .server && socketPath.hasSuffix("/") {
                throw .invalid("socketPath", "'\(socketPath)'", "a socket's path in server mode, not a directory")
            }
            guard connectTimeoutMilliseconds >= 0 else {
                throw .invalid("connectTimeoutMilliseconds", connectTimeoutMilliseconds, "0 (one attempt) or more")
            }
            guard replyTimeoutMilliseconds > 0 else {
                throw .invalid("replyTimeoutMilliseconds", replyTimeoutMilliseconds, "at least 1")
            }
            guard reconnectTimeoutMilliseconds >= 0 else {
                throw .invalid("reconnectTimeoutMilliseconds", reconnectTimeoutMilliseconds, "0 (one attempt) or more")
            }
        }
    }

    /// Offloads a device can ask for, each a virtio-net feature bit.
    public struct Offloads: OptionSet, Sendable, Hashable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// VIRTIO_NET_F_CSUM: frames may go out with their checksum left to the back-end.
        public static let transmitChecksum = Offloads(rawValue: 1 << 0)
        /// VIRTIO_NET_F_GUEST_CSUM: frames may arrive with their checksum still to fill in, or
        /// marked as verified.
        public static let receiveChecksum = Offloads(rawValue: 1 << 1)
        /// VIRTIO_NET_F_HOST_TSO4 / _TSO6: large TCP frames go out for the back-end to segment.
        public static let transmitSegmentation4 = Offloads(rawValue: 1 << 2)
        public static let transmitSegmentation6 = Offloads(rawValue: 1 << 3)
        /// VIRTIO_NET_F_GUEST_TSO4 / _TSO6: large TCP frames may arrive unsegmented.
        public static let receiveSegmentation4 = Offloads(rawValue: 1 << 4)
        public static let receiveSegmentation6 = Offloads(rawValue: 1 << 5)

        /// The feature bits these stand for.
        public var features: VirtioFeatures {
            var features: VirtioFeatures = []
            if contains(.transmitChecksum) { features.insert(.netCsum) }
            if contains(.receiveChecksum) { features.insert(.netGuestCsum) }
            if contains(.transmitSegmentation4) { features.insert(.netHostTSO4) }
            if contains(.transmitSegmentation6) { features.insert(.netHostTSO6) }
            if contains(.receiveSegmentation4) { features.insert(.netGuestTSO4) }
            if contains(.receiveSegmentation6) { features.insert(.netGuestTSO6) }
            return features
        }
    }

    /// Whether frames can flow.
    public enum LinkState: Sendable, Equatable, CustomStringConvertible {
        /// Negotiated and running.
        case up
        /// Not started, stopped, or the back-end went away or broke the protocol (the reason).
        case down(reason: LinkDownReason)

        public var description: String {
            switch self {
            case .up: return "up"
            case .down(let reason): return "down (\(reason))"
            }
        }
    }

    /// Why the link is down; match it to react, print it to tell a person.
    public enum LinkDownReason: Sendable, Equatable, CustomStringConvertible {
        /// ``VirtioUserDevice/start()`` has not been called.
        case notStarted
        /// ``VirtioUserDevice/stop()`` ended the session.
        case stopped
        /// The back-end closed the connection; in client mode the device is reconnecting, in
        /// server mode it waits for the back-end to connect again.
        case backEndClosed
        /// The back-end reports the link down in its config space (VIRTIO_NET_S_LINK_UP clear).
        case backEndReportsLinkDown
        /// The session ended on this error: a ring violation, a hole in the memory, a failed
        /// negotiation.
        case failed(VirtioError)
        /// Reading the link status from the back-end's config space failed (it did not answer
        /// GET_CONFIG in time, or answered wrongly), which ends the session.
        case linkQueryFailed(VirtioError)
        /// The link is being re-established; the last attempt failed with this error.
        case reconnecting(lastAttempt: VirtioError)
        /// In client mode the back-end did not return within the reconnect timeout
        /// (`milliseconds`); call ``VirtioUserDevice/stop()`` and ``VirtioUserDevice/start()``
        /// to try again.
        case gaveUpReconnecting(milliseconds: Int)

        public var description: String {
            switch self {
            case .notStarted: "not started"
            case .stopped: "stopped"
            case .backEndClosed: "the back-end closed the connection"
            case .backEndReportsLinkDown: "the back-end reports the link down (VIRTIO_NET_S_LINK_UP clear)"
            case .failed(let error): error.description
            case .linkQueryFailed(let error): "reading the link status failed: \(error)"
            case .reconnecting(let error): "reconnecting: \(error)"
            case .gaveUpReconnecting(let milliseconds): "the back-end did not return within \(milliseconds) ms; call stop() and start() to try again"
            }
        }
    }

    /// Counters of one queue pair, read at one moment.
    public struct PairStatistics: Sendable, Equatable {
        public var rx: QueueStatistics
        public var tx: QueueStatistics
    }

    /// Counters of the receive and transmit queues, read at one moment: summed over every
    /// queue pair, and per pair.
    public struct Statistics: Sendable, Equatable {
        /// All receive queues together.
        public var rx: QueueStatistics
        /// All transmit queues together.
        public var tx: QueueStatistics
        /// Buffers in all pools together.
        public var poolSize: Int
        /// Each queue pair's own counters, in pair order.
        public var queuePairs: [PairStatistics]
    }
}

extension VirtioUserDevice {
    /// The most queue pairs a device drives. vhost-user names a ring in 8 bits in its kick and
    /// call messages, so 127 would be the protocol's limit; 64 keeps the memory table small.
    public static let maximumQueuePairs = 64
}

/// Where rings and buffers sit in the one shared region: every ring first (receive and
/// transmit of pair 0, then pair 1, …), each on its own page, then each transmit ring's
/// indirect tables, then the pools back to back.
struct DeviceMemoryLayout {
    let ringBytes: Int
    let indirectBytes: Int
    let indirectOffset: Int
    let poolOffset: Int
    let totalBytes: Int

    init(queueSize: Int, poolSize: Int, queuePairs: Int) {
        ringBytes = SharedMemoryRegion.roundUp(
            max(SplitRingMemory.bytesNeeded(size: queueSize), PackedRingMemory.bytesNeeded(size: queueSize)), to: 4096)
        indirectBytes = SharedMemoryRegion.roundUp(SplitRingDriver.indirectBytesNeeded(size: queueSize), to: 4096)
        indirectOffset = 2 * queuePairs * ringBytes
        poolOffset = indirectOffset + queuePairs * indirectBytes
        totalBytes = poolOffset + PacketPool.bytesNeeded(count: poolSize * queuePairs)
    }

    /// Where virtio ring `index` (2 × pair, + 1 for transmit) starts.
    func ringOffset(_ index: Int) -> Int { index * ringBytes }

    /// Where pair `pair`'s transmit ring keeps its indirect tables.
    func indirectTablesOffset(pair: Int) -> Int { indirectOffset + pair * indirectBytes }
}
