@_exported import VirtioCore
import Synchronization
@_exported import VhostUser

/// A virtio-net device in user space, driven over vhost-user: the Swift counterpart of DPDK's
/// virtio-user poll-mode driver.
///
/// The device owns one shared memory region (memfd by default, hugepages on request) holding
/// both virtqueues and the packet-buffer pool, connects to a vhost-user back-end, negotiates
/// features, and then moves frames in bursts without copying.
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
/// any thread. The data path (`allocate`, `transmit`, `receive`, `release`) belongs to one
/// thread at a time — the one polling the queue pair — and never blocks, locks or allocates.
public final class VirtioUserDevice: Sendable {
    /// The configuration the device was created with.
    public let configuration: Configuration
    /// Our MAC address.
    public let macAddress: MACAddress
    /// The largest frame one buffer carries (without the virtio-net header).
    public static let maximumFrameLength = PacketPool.dataRoom

    @usableFromInline let queues: QueuePair
    let memory: SharedMemoryRegion
    let layout: DeviceMemoryLayout
    let control = Locked(ControlState())
    /// Tells the link monitor to finish.
    let monitorStopping = Atomic<Bool>(false)
    /// Sessions established so far (the first start and every reconnection).
    let connections = Atomic<Int>(0)

    struct Notifiers: Sendable {
        let rxKick: EventNotifier
        let txKick: EventNotifier
        let rxCall: EventNotifier
        let txCall: EventNotifier
    }
    let notifiers: Notifiers

    struct ControlState {
        var started = false
        var session: VhostUserFrontend?
        var negotiated: VirtioFeatures = []
        var protocolFeatures: VhostUserProtocolFeatures = []
        var downReason = "not started"
        /// Server mode: our listening socket, kept across reconnections until stop().
        var listener: Listener?
        var monitor: DedicatedThread?
    }

    /// Ring indices of queue pair 0 (virtio-net: receive queue 0, transmit queue 1).
    static let rxIndex: UInt32 = 0
    static let txIndex: UInt32 = 1

    /// Allocates the shared memory, the rings and the pool. Nothing is sent until ``start()``.
    public init(configuration: Configuration) throws(VirtioError) {
        try configuration.validate()
        self.configuration = configuration
        macAddress = configuration.macAddress ?? .randomLocal()
        layout = DeviceMemoryLayout(queueSize: configuration.queueSize, poolSize: configuration.effectivePoolSize)
        memory = try SharedMemoryRegion(
            minimumSize: layout.totalBytes, backing: configuration.memory,
            fallbackToNormalPages: configuration.fallbackToNormalPages, name: "virtio-user")
        notifiers = Notifiers(rxKick: try EventNotifier(), txKick: try EventNotifier(),
                              rxCall: try EventNotifier(), txCall: try EventNotifier())
        let pool = PacketPool(base: memory.base + layout.poolOffset, count: configuration.effectivePoolSize)
        let rxRing = SplitRingDriver(memory: .place(at: memory.base + layout.rxRingOffset, size: configuration.queueSize))
        let txRing = SplitRingDriver(memory: .place(at: memory.base + layout.txRingOffset, size: configuration.queueSize))
        queues = QueuePair(
            rx: ReceiveQueue(ring: rxRing, pool: pool, kick: notifiers.rxKick, refillThreshold: configuration.burstSize),
            tx: TransmitQueue(ring: txRing, pool: pool, kick: notifiers.txKick),
            pool: pool)
    }

    deinit {
        stop()
    }

    // MARK: - Memory facts

    /// The backing in use (after any hugepage fallback).
    public var memoryBacking: MemoryBacking { memory.backing }
    /// Why hugepages were not used although asked for, or nil.
    public var memoryFallbackReason: String? { memory.fallbackReason }
    /// Bytes of shared memory (rings and pool), the one region of the memory table.
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

    /// Features we can drive. Everything else a back-end offers (mergeable buffers, offloads,
    /// indirect descriptors…) is declined, so any back-end works with the simple layout.
    public static let supportedFeatures: VirtioFeatures = [.version1, .vhostUserProtocolFeatures]

    /// Connects to the back-end — in client mode by connecting (retrying while it is not
    /// there), in server mode by listening and waiting for it — then negotiates, shares the
    /// memory and starts both queues, in DPDK virtio-user's message order. Waits at most
    /// ``Configuration/connectTimeoutMilliseconds`` for the back-end. With
    /// ``Configuration/reconnect``, a thread then watches the connection and re-establishes
    /// it after the back-end goes away.
    public func start() throws(VirtioError) {
        try control.withLock { (state) throws(VirtioError) in
            guard !state.started else {
                throw VirtioError(.invalidState, "The device is already started; stop() it first.")
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

    /// Stops traffic: waits for a burst in progress, disables both rings, asks the back-end
    /// where it stopped (GET_VRING_BASE), closes the connection (and, in server mode, the
    /// listening socket) and returns every in-flight buffer to the pool. Safe to call when not
    /// started.
    public func stop() {
        monitorStopping.store(true, ordering: .relaxed)
        // Join outside the lock: the monitor takes it too.
        let monitor = control.withLock { state in
            defer { state.monitor = nil }
            return state.monitor
        }
        // The monitor may be the thread running this (the last reference to the device was
        // its own, so deinit calls stop() there): it cannot join itself, so it is detached.
        if let monitor {
            if monitor.isCurrent { monitor.detach() } else { monitor.join() }
        }
        control.withLock { state in
            if state.session != nil {
                tearDown(&state, reason: "stopped", orderly: true)
            }
            state.listener = nil
            state.started = false
        }
    }

    /// Whether frames can flow now. A back-end that closed the socket, or broke the ring
    /// protocol, brings the link down; with reconnection on, it comes back up by itself.
    public var linkState: LinkState {
        control.withLock { state in
            guard let session = state.session else { return .down(reason: state.downReason) }
            if Poll.peerHasClosed(session.channel.socket.raw) {
                return .down(reason: "the back-end closed the connection")
            }
            if let violation = queues.rx.ring.violation ?? queues.tx.ring.violation {
                return .down(reason: violation)
            }
            return .up
        }
    }

    /// The vhost-user requests sent in the current session, in order (for traces and tests).
    public var sentRequests: [String] {
        control.withLock { $0.session?.sentRequests.map(\.description) ?? [] }
    }

    /// Counters of both queues.
    public var statistics: Statistics {
        Statistics(
            rx: queues.rx.counters.snapshot, tx: queues.tx.counters.snapshot,
            poolSize: queues.pool.count)
    }

    // MARK: - Data path (one thread per queue pair)

    /// Takes up to `count` empty buffers from the pool into `burst` (bounded by its free space);
    /// returns how many. Their `length` is 0: write the frame at `data` and set it.
    @inlinable
    @discardableResult
    public func allocate(into burst: PacketBurst, count: Int) -> Int {
        // The control path returns in-flight buffers to the pool when the link drops, from the
        // link monitor's thread: pool calls wait while it does.
        queues.enterPool()
        defer { queues.leave() }
        let pool = queues.pool
        let wanted = min(count, burst.space)
        var taken = 0
        while taken < wanted, let buffer = pool.take() {
            burst.append(buffer)
            taken &+= 1
        }
        return taken
    }

    /// Transmits the frames of `burst` from the front; returns how many were accepted. Those
    /// leave the burst (the device owns them until the back-end is done); the rest stay, still
    /// yours. Returns 0 when the device is not running.
    @inlinable
    @discardableResult
    public func transmit(_ burst: PacketBurst) -> Int {
        guard queues.enter() else { return 0 }
        defer { queues.leave() }
        return queues.tx.transmit(burst)
    }

    /// Appends received frames to `burst` (up to its free space); returns how many. The
    /// buffers are yours until you transmit or release them. Returns 0 when not running.
    @inlinable
    @discardableResult
    public func receive(into burst: PacketBurst) -> Int {
        guard queues.enter() else { return 0 }
        defer { queues.leave() }
        return queues.rx.receive(into: burst)
    }

    /// Buffers free in the pool now. A data-path call: from the queue pair's thread, or while
    /// no thread polls it. With the device stopped and every burst released, it equals
    /// ``Statistics/poolSize``: no buffer is lost.
    public func availableBuffers() -> Int { queues.pool.available }

    /// Buffers handed to ``release(_:)`` that were already free or not from this pool (each
    /// was ignored, so the pool stayed intact). A data-path call, like ``availableBuffers()``.
    public func invalidReleases() -> UInt64 { queues.pool.invalidReleases }

    /// Returns every buffer in `burst` to the pool and empties it.
    @inlinable
    public func release(_ burst: PacketBurst) {
        queues.enterPool()
        defer { queues.leave() }
        let pool = queues.pool
        var i = 0
        while i < burst.count {
            pool.put(slot: burst.storage[i].slot)
            i &+= 1
        }
        burst.removeAll()
    }
}
