import NIOCore
import Synchronization
import VirtioUserIP

/// A swift-nio `Channel` whose bytes are one ``TCPConnection``'s: what the peer sends is read
/// into `ByteBuffer`s, what the pipeline writes and flushes goes into lwIP's send buffer.
///
/// Everything but ``isActive`` and ``isWritable`` runs on ``eventLoop``. The loop never waits
/// on the peer: when the connection has no bytes (or no send-buffer room), the stack's wake
/// schedules the read (or the flush) on the loop again, with no task in between. Made by
/// ``VirtioUserIP/TCPConnection/channel(on:initializer:)``.
final class TCPConnectionChannel: Channel, ChannelCore, @unchecked Sendable {
    let connection: TCPConnection
    let eventLoop: any EventLoop
    let allocator = ByteBufferAllocator()
    let localAddress: SocketAddress?
    let remoteAddress: SocketAddress?
    var parent: (any Channel)? { nil }
    var _channelCore: any ChannelCore { self }
    var pipeline: ChannelPipeline { _pipeline }
    var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    var isActive: Bool { active.load(ordering: .relaxed) }
    var isWritable: Bool { writable.load(ordering: .relaxed) }

    private var _pipeline: ChannelPipeline!
    let closePromise: EventLoopPromise<Void>
    // Read from any thread (Channel's contract), written on the loop.
    let active = Atomic<Bool>(false)
    private let writable = Atomic<Bool>(true)

    // MARK: State, on the event loop only

    enum Lifecycle { case initializing, open, closed }
    var lifecycle = Lifecycle.initializing
    /// The channel keeps itself alive while open, as a socket's registration does: an app
    /// that drops every reference still has its connection served until one side closes.
    var keepAlive: TCPConnectionChannel?

    var autoRead = true
    var allowRemoteHalfClosure = false
    var maxMessagesPerRead: UInt = 4
    var closeLinger = TimeAmount.seconds(30)
    var waterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 64 * 1024)

    /// The pipeline asked for a read that has not been answered yet.
    var readRequested = false
    /// Waiting for the connection to have bytes (or an end).
    var waitingToRead = false
    /// Inside `deliver()`: a read the pipeline asks for meanwhile is taken by its loop.
    var delivering = false
    var inputClosed = false

    /// Written, not yet taken by lwIP; the first `flushedCount` were flushed.
    var pendingWrites = CircularBuffer<PendingWrite>()
    var flushedCount = 0
    var pendingBytes = 0
    /// Waiting for room in lwIP's send buffer.
    var waitingToWrite = false
    /// Inside `pump()`: a flush asked for meanwhile is taken by its loop.
    var pumping = false
    var outputClosed = false
    /// `close(mode: .output)` waits for the flushed writes to be taken, then sends FIN.
    var outputClose: (pending: Bool, promise: EventLoopPromise<Void>?) = (false, nil)
    /// A close waiting for the flushed writes to be taken (see `close0`).
    var closing: Closing?

    struct Closing {
        let error: Error
        let promise: EventLoopPromise<Void>?
        let deadline: Scheduled<Void>
    }

    struct PendingWrite {
        var buffer: ByteBuffer
        let promise: EventLoopPromise<Void>?
    }

    init(connection: TCPConnection, eventLoop: any EventLoop) {
        self.connection = connection
        self.eventLoop = eventLoop
        closePromise = eventLoop.makePromise()
        localAddress = try? SocketAddress(connection.local)
        remoteAddress = try? SocketAddress(connection.remote)
        _pipeline = ChannelPipeline(channel: self)
    }

    /// After the initializer: registered and active, and reading under auto-read.
    func start() {
        eventLoop.preconditionInEventLoop()
        guard lifecycle == .initializing else { return }
        lifecycle = .open
        keepAlive = self
        active.store(true, ordering: .relaxed)
        pipeline.fireChannelRegistered()
        pipeline.fireChannelActive()
        pump()
        if autoRead, lifecycle == .open { pipeline.read() } else { deliver() }
    }

    /// The initializer failed: the connection is reset and the channel never becomes active.
    func abandon() {
        eventLoop.preconditionInEventLoop()
        guard lifecycle == .initializing else { return }
        connection.abort()
        finishClose(error: ChannelError.ioOnClosedChannel, promise: nil)
    }

    /// The connection failed (reset, timed out): the pipeline hears the error, then the close
    /// (at once, even while a close lingers: nothing more can be sent).
    func failed(_ error: IPError) {
        guard lifecycle == .open else { return }
        pipeline.fireErrorCaught(error)
        let promise = closing?.promise
        closing?.deadline.cancel()
        closing = nil
        finishClose(error: error, promise: promise)
    }

    func setWritable(_ now: Bool) {
        guard isWritable != now else { return }
        writable.store(now, ordering: .relaxed)
        pipeline.fireChannelWritabilityChanged()
    }

    // MARK: ChannelCore

    func localAddress0() throws -> SocketAddress {
        guard let localAddress else { throw ChannelError.unknownLocalAddress }
        return localAddress
    }

    func remoteAddress0() throws -> SocketAddress {
        guard let remoteAddress else { throw ChannelError.operationUnsupported }
        return remoteAddress
    }

    /// Registered from the start; binding and connecting belong to ``VirtioUserIP/IPInterface``.
    func register0(promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) { promise?.fail(ChannelError.operationUnsupported) }
    func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    /// Reads and errors that reached the pipeline's end unhandled are dropped, as a socket's are.
    func channelRead0(_ data: NIOAny) {}
    func errorCaught0(error: Error) {}
}

extension SocketAddress {
    init(_ endpoint: IPEndpoint) throws {
        try self.init(ipAddress: endpoint.address.description, port: Int(endpoint.port))
    }
}
