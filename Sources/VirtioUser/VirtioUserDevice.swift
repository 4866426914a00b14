#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import Synchronization
import VhostUser

/// A virtio-net device in user space, driven over vhost-user: the Swift counterpart of DPDK's
/// virtio-user poll-mode driver.
///
/// The device owns one shared memory region (memfd by default, hugepages on request) holding
/// every virtqueue and the packet-buffer pools, connects to a vhost-user back-end, negotiates
/// features, and then moves frames in bursts without copying. With
/// ``Configuration/queuePairs`` above 1 (VIRTIO_NET_F_MQ), each queue pair has its own rings
/// and pool and is driven by its own thread: pass its number as `queue` to the data-path calls.
///
/// ```swift
/// let device = try VirtioUserDevice(configuration: .init(socketPath: "/tmp/vhost.sock"))
/// try device.start()
/// let burst = PacketBurst(capacity: 32)
/// let n = device.allocate(into: burst, count: 32)   // fill burst[i].data, set burst[i].length
/// device.transmit(burst)                            // sent buffers leave the burst
/// device.receive(into: burst)                       // received frames join the burst
/// device.release(burst)                             // back to the pool
/// ```
///
/// Threading: the control path (`start`, `stop`, `linkState`, `statistics`) may be called from
/// any thread. The data path (`allocate`, `transmit`, `receive`, `release`) of one queue pair
/// belongs to one thread at a time — the one polling that pair — and never blocks, locks or
/// allocates. Buffers belong to the pair whose pool they came from: hand them back through the
/// same pair (a buffer passed to another pair is refused and counted, never adopted).
public final class VirtioUserDevice: Sendable {
    /// The configuration the device was created with.
    public let configuration: Configuration
    /// Our MAC address: the configured one, else the back-end's (read from its config space
    /// at start), else a random locally administered one chosen at creation.
    public var macAddress: MACAddress { control.withLock { $0.macAddress } }
    /// Our MTU: the configured one, else the back-end's (VIRTIO_NET_F_MTU, read at start),
    /// else 1500.
    public var mtu: Int { control.withLock { $0.mtu } }
    /// The largest frame one buffer carries (without the virtio-net header).
    public static let maximumFrameLength = PacketPool.dataRoom
    /// The largest frame a chain of buffers carries on transmit (see ``PacketBuffer/segments``):
    /// jumbo frames of 9,216 bytes take five buffers.
    public static let maximumChainedFrameLength = 65_535

    /// The queue pairs, in order (pair `n`: receive ring `2n`, transmit ring `2n + 1`).
    @usableFromInline let pairs: [QueuePair]
    /// The same pairs, unretained, for the data path: a class reference loaded from an array
    /// is retained and released around each use, which a burst should not pay. `pairs` keeps
    /// them alive; written once in `init`.
    @usableFromInline nonisolated(unsafe) let pairTable: UnsafeMutablePointer<Unmanaged<QueuePair>>
    let memory: SharedMemoryRegion
    let layout: DeviceMemoryLayout
    let control: Locked<ControlState>
    /// Tells the link monitor to finish.
    let monitorStopping = Atomic<Bool>(false)
    /// Sessions established so far (the first start and every reconnection).
    let connections = Atomic<Int>(0)
    /// Set once a back-end was given an fd of ours: a later session renews them first.
    let sharedWithABackEnd = Atomic<Bool>(false)
    /// The SIGBUS guard's slot for ``memory`` (-1: unguarded, all 2,048 slots in use).
    let memoryGuardSlot: Int32
    /// ``memoryFaults()`` when the memory was last renewed.
    let faultsAtRenewal = Atomic<UInt64>(0)

    struct ControlState {
        var started = false
        var session: VhostUserFrontend?
        var negotiated: VirtioFeatures = []
        var macAddress: MACAddress
        var mtu: Int
        /// STATUS and CONFIG negotiated: ``linkState`` asks the back-end for the link bit.
        var linkStatusFromConfig = false
        var protocolFeatures: VhostUserProtocolFeatures = []
        var downReason: LinkDownReason = .notStarted
        /// Server mode: our listening socket, kept across reconnections until stop().
        var listener: Listener?
        var monitor: DedicatedThread?
        /// The connection the link monitor is negotiating on, off the lock: stop() shuts it
        /// down so a back-end that answers slowly cannot hold the join.
        var negotiating: OwnedDescriptor?
    }

    /// What a back-end can cost the control path, at most: a teardown's messages together
    /// (``stop()``), and the link-status read in ``linkState``.
    enum ControlBudget {
        static let teardownMilliseconds = 1000
        static let linkQueryMilliseconds = 500
    }

    /// Allocates the shared memory, the rings and the pool. Nothing is sent until ``start()``.
    public init(configuration: Configuration) throws(VirtioError) {
        try configuration.validate()
        self.configuration = configuration
        control = Locked(ControlState(
            macAddress: configuration.macAddress ?? .randomLocal(),
            mtu: configuration.mtu ?? VirtioNetMTU.ethernetDefault))
        let layout = DeviceMemoryLayout(
            queueSize: configuration.queueSize, poolSize: configuration.effectivePoolSize,
            queuePairs: configuration.queuePairs)
        self.layout = layout
        memory = try SharedMemoryRegion(
            minimumSize: layout.totalBytes, backing: configuration.memory,
            fallbackToNormalPages: configuration.fallbackToNormalPages, name: "virtio-user")
        var pairs: [QueuePair] = []
        let poolSize = configuration.effectivePoolSize
        for index in 0..<configuration.queuePairs {
            let pool = PacketPool(
                base: memory.base + layout.poolOffset, firstSlot: UInt32(index * poolSize), count: poolSize)
            // Each ring's memory holds either format; the session picks one.
            let rxBase = memory.base + layout.ringOffset(2 * index)
            let txBase = memory.base + layout.ringOffset(2 * index + 1)
            let size = configuration.queueSize
            let txSplit = SplitRingDriver(memory: .place(at: txBase, size: size))
            let txPacked = PackedRingDriver(memory: .place(at: txBase, size: size))
            let tables = memory.base + layout.indirectTablesOffset(pair: index)
            txSplit.attachIndirectTables(at: tables, address: UInt64(UInt(bitPattern: tables)))
            txPacked.attachIndirectTables(at: tables, address: UInt64(UInt(bitPattern: tables)))
            txSplit.acceptsBatchedCompletions = true
            pairs.append(QueuePair(
                index: index,
                rx: ReceiveQueue(
                    split: SplitRingDriver(memory: .place(at: rxBase, size: size)), packed: PackedRingDriver(memory: .place(at: rxBase, size: size)),
                    pool: pool, kick: try EventNotifier(), refillThreshold: configuration.burstSize),
                tx: TransmitQueue(split: txSplit, packed: txPacked, pool: pool, kick: try EventNotifier()),
                pool: pool, rxCall: try EventNotifier(), txCall: try EventNotifier()))
        }
        self.pairs = pairs
        pairTable = .allocate(capacity: pairs.count)
        pairTable.initialize(from: pairs.map { Unmanaged.passUnretained($0) }, count: pairs.count)
        // Seals stop a back-end from shrinking the memory, not from punching holes in it: on
        // hugetlbfs a page it punched out may not come back, and the access raises SIGBUS.
        // The guard absorbs that (zero memory under the access) and the link monitor ends the
        // session; the next one gets fresh memory.
        memoryGuardSlot = cvs_guard_register(memory.base, memory.size)
    }

    deinit {
        stop()
        if memoryGuardSlot >= 0 { cvs_guard_unregister(memoryGuardSlot) }
        pairTable.deallocate()
    }

    // MARK: - Memory facts

    /// The backing in use (after any hugepage fallback).
    public var memoryBacking: MemoryBacking { memory.backing }
    /// Why hugepages were not used although asked for, or nil.
    public var memoryFallbackReason: String? { memory.fallbackReason }
    /// Bytes of shared memory (rings and pools), the one region of the memory table.
    public var sharedMemoryBytes: Int { memory.size }
    /// The NUMA node the memory was bound to, or nil without NUMA support.
    public var numaNode: Int? { memory.numaNode }

    // MARK: - Control path

    /// Features agreed with the back-end (empty until started).
    public var negotiatedFeatures: VirtioFeatures { control.withLock { $0.negotiated } }
    /// vhost-user protocol features agreed with the back-end.
    public var protocolFeatures: VhostUserProtocolFeatures { control.withLock { $0.protocolFeatures } }
    /// Sessions established since creation: 1 after the first start, one more per reconnection.
    public var connectionCount: Int { connections.load(ordering: .relaxed) }
    /// Queue pairs (``Configuration/queuePairs``): valid `queue` arguments are 0 up to this.
    public var queuePairCount: Int { pairs.count }

    /// Features we can drive. Everything else a back-end offers is declined. MQ is asked for
    /// only with more than one queue pair; MAC, MTU and STATUS only when they can be used
    /// (see ``Configuration/macAddress`` and ``Configuration/mtu``).
    public static let supportedFeatures: VirtioFeatures = [
        .version1, .vhostUserProtocolFeatures, .netMultiqueue, .netMAC, .netMTU, .netStatus,
        .netMergeableRxBuffers, .ringEventIndex, .ringIndirectDescriptors, .inOrder, .ringPacked,
    ]

    /// Connects to the back-end — in client mode by connecting (retrying while it is not
    /// there), in server mode by listening and waiting for it — then negotiates, shares the
    /// memory and starts every queue, in DPDK virtio-user's message order. Waits at most
    /// ``Configuration/connectTimeoutMilliseconds`` for the back-end. With
    /// ``Configuration/reconnect``, a thread then watches the connection and re-establishes
    /// it after the back-end goes away.
    public func start() throws(VirtioError) {
        try control.withLock { (state) throws(VirtioError) in
            guard !state.started else {
                throw .state(.alreadyRunning("The device"))
            }
            let socket = try connect(&state, timeoutMilliseconds: configuration.connectTimeoutMilliseconds)
            try establish(socket, &state)
            state.started = true
            if configuration.reconnect {
                monitorStopping.store(false, ordering: .relaxed)
                state.monitor = try startLinkMonitor()
            }
        }
    }

    /// Stops traffic: waits for bursts in progress, disables every ring, asks the back-end
    /// where it stopped (GET_VRING_BASE), closes the connection (and, in server mode, the
    /// listening socket) and returns every in-flight buffer to the pool. Safe to call when not
    /// started.
    ///
    /// Returns within about 2 s whatever the back-end does: the teardown's messages get 1 s in
    /// all, a negotiation the link monitor is running is cut short, a ``linkState`` read in
    /// progress takes at most 0.5 s, and a burst in progress at most 10 ms more (a kick the
    /// back-end made block).
    public func stop() {
        monitorStopping.store(true, ordering: .relaxed)
        // Join outside the lock: the monitor takes it too.
        let monitor = control.withLock { state in
            defer { state.monitor = nil }
            // A negotiation in progress ends at once (the back-end sees the connection close).
            if let socket = state.negotiating { _ = shutdown(socket.raw, Int32(SHUT_RDWR)) }
            return state.monitor
        }
        // The monitor may be the thread running this (the last reference to the device was
        // its own, so deinit calls stop() there): it cannot join itself, so it is detached.
        if let monitor {
            if monitor.isCurrent { monitor.detach() } else { monitor.join() }
        }
        control.withLock { state in
            // The listener first: a back-end that reconnects as soon as its session ends (OVS
            // does, within a millisecond) is then refused, not left in our backlog to be reset.
            state.listener = nil
            if state.session != nil {
                tearDown(&state, reason: .stopped, orderly: true)
            } else if state.started {
                // Down while reconnecting (or given up): stopped now, whatever it was before.
                state.downReason = .stopped
            }
            state.started = false
        }
    }

    /// Whether frames can flow now. A back-end that closed the socket, or broke the ring
    /// protocol, brings the link down; with reconnection on, it comes back up by itself.
    public var linkState: LinkState {
        control.withLock { state in
            guard let session = state.session else { return .down(reason: state.downReason) }
            if Poll.peerHasClosed(session.channel.socket.raw) {
                return .down(reason: .backEndClosed)
            }
            if memoryFaults() != faultsAtRenewal.load(ordering: .relaxed) {
                return .down(reason: .failed(.memory(.holePunched)))
            }
            for pair in pairs {
                if let violation = pair.rx.violation ?? pair.tx.violation {
                    return .down(reason: .failed(.ringViolation(violation)))
                }
            }
            if state.linkStatusFromConfig {
                // The lock is held: the back-end gets a short budget, and one that cannot
                // answer within it (or answers wrongly) has broken the session, since a late
                // reply would be taken for the answer to the next request.
                session.channel.deadline = MonotonicClock.deadline(milliseconds: ControlBudget.linkQueryMilliseconds, after: MonotonicClock.nanoseconds())
                defer { session.channel.deadline = .max }
                do throws(VirtioError) {
                    let bytes = try session.getConfig(offset: 0, size: UInt32(VirtioNetConfig.byteCount))
                    guard let config = VirtioNetConfig(bytes: bytes) else {
                        return .down(reason: .failed(.negotiation(.shortConfigSpace(bytes: bytes.count))))
                    }
                    if config.status & VirtioNetConfig.linkUp == 0 {
                        return .down(reason: .backEndReportsLinkDown)
                    }
                } catch {
                    tearDown(&state, reason: .linkQueryFailed(error), orderly: false)
                    return .down(reason: state.downReason)
                }
            }
            return .up
        }
    }

    /// The vhost-user requests sent in the current session, in order (for traces and tests).
    package var sentRequests: [String] {
        control.withLock { $0.session?.sentRequests.map(\.description) ?? [] }
    }

    /// Counters of every queue, and their sums.
    public var statistics: Statistics {
        let perPair = pairs.map { PairStatistics(rx: $0.rx.counters.snapshot, tx: $0.tx.counters.snapshot) }
        return Statistics(
            rx: perPair.reduce(QueueStatistics()) { $0 + $1.rx }, tx: perPair.reduce(QueueStatistics()) { $0 + $1.tx },
            poolSize: pairs.reduce(0) { $0 + $1.pool.count }, queuePairs: perPair)
    }

    // MARK: - Data path (one thread per queue pair)

    /// Queue pair `queue`, or nil when there is no such pair (the call then does nothing).
    @inlinable
    func pair(_ queue: Int) -> QueuePair? {
        queue >= 0 && queue < pairs.count ? pairs[queue] : nil
    }

    /// Runs `body` with queue pair `queue` without retaining it; `otherwise` when there is no
    /// such pair.
    @inlinable
    func withPair<Result>(_ queue: Int, otherwise: Result, _ body: (QueuePair) -> Result) -> Result {
        guard UInt(bitPattern: queue) < UInt(bitPattern: pairs.count) else { return otherwise }
        return pairTable[queue]._withUnsafeGuaranteedRef(body)
    }

    /// Takes up to `count` empty buffers from queue pair `queue`'s pool into `burst` (bounded
    /// by its free space); returns how many. Their `length` is 0: write the frame at `data` and
    /// set it.
    @inlinable
    @discardableResult
    public func allocate(into burst: PacketBurst, count: Int, queue: Int = 0) -> Int {
        withPair(queue, otherwise: 0) { queuePair in
            // Nothing to take touches nothing: no handshake (a full burst, as a transmit loop
            // whose ring is full leaves it, asks for none).
            let wanted = min(count, burst.space)
            guard wanted > 0 else { return 0 }
            // The control path returns in-flight buffers to the pool when the link drops, from
            // the link monitor's thread: pool calls wait while it does.
            queuePair.enterPool()
            defer { queuePair.leave() }
            let pool = queuePair.pool
            var taken = 0
            while taken < wanted, let buffer = pool.take() {
                burst.append(buffer)
                taken &+= 1
            }
            return taken
        }
    }

    /// Transmits the frames of `burst` from the front on queue pair `queue`; returns how many
    /// were accepted. Those leave the burst (the device owns them until the back-end is done);
    /// the rest stay, still yours. Returns 0 when the device is not running.
    @inlinable
    @discardableResult
    public func transmit(_ burst: PacketBurst, queue: Int = 0) -> Int {
        withPair(queue, otherwise: 0) { queuePair in
            guard queuePair.enter() else { return 0 }
            defer { queuePair.leave() }
            if let capture = queuePair.capture.load(ordering: .sequentiallyConsistent) {
                return capture._withUnsafeGuaranteedRef { queuePair.tx.transmit(burst, capture: $0) }
            }
            return queuePair.tx.transmit(burst)
        }
    }

    /// Appends frames received on queue pair `queue` to `burst` (up to its free space);
    /// returns how many. The buffers are yours until you transmit or release them (through the
    /// same pair). Returns 0 when not running.
    ///
    /// With mergeable receive buffers a long frame arrives in several 2,048-byte buffers, one
    /// burst entry each: a 9,000-byte jumbo frame takes 5, a 64 KiB frame 33. A frame of more
    /// buffers than `burst` can ever hold (its capacity) is dropped and counted in
    /// `statistics.rx.drops`, so size bursts for the longest frame you expect.
    @inlinable
    @discardableResult
    public func receive(into burst: PacketBurst, queue: Int = 0) -> Int {
        withPair(queue, otherwise: 0) { queuePair in
            guard queuePair.enter() else { return 0 }
            defer { queuePair.leave() }
            let received = queuePair.rx.receive(into: burst)
            if received > 0, let capture = queuePair.capture.load(ordering: .sequentiallyConsistent) {
                capture._withUnsafeGuaranteedRef {
                    if $0.directions.contains(.receive) { $0.record(burst, from: burst.count - received, count: received) }
                }
            }
            return received
        }
    }

    /// Buffers free in queue pair `queue`'s pool now. A data-path call: from the pair's
    /// thread, or while no thread polls it. With the device stopped and every burst released,
    /// the sum over all pairs equals ``Statistics/poolSize``: no buffer is lost.
    public func availableBuffers(queue: Int = 0) -> Int { pair(queue)?.pool.available ?? 0 }

    /// Buffers handed to pair `queue` (by ``release(_:queue:)`` or ``transmit(_:queue:)``)
    /// that were already free or came from another pool; each was ignored, so every pool stayed
    /// intact. A data-path call, like ``availableBuffers(queue:)``.
    public func invalidReleases(queue: Int = 0) -> UInt64 { pair(queue)?.pool.invalidReleases ?? 0 }

    /// Returns every buffer in `burst` to queue pair `queue`'s pool and empties it.
    @inlinable
    public func release(_ burst: PacketBurst, queue: Int = 0) {
        withPair(queue, otherwise: ()) { queuePair in
            // An empty burst (a receive that found nothing) costs no handshake.
            guard burst.count > 0 else { return }
            queuePair.enterPool()
            defer { queuePair.leave() }
            let pool = queuePair.pool
            var i = 0
            while i < burst.count {
                pool.put(slot: burst.storage[i].slot)
                i &+= 1
            }
            burst.removeAll()
        }
    }
}
