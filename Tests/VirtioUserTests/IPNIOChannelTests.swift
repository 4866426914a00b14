import NIOCore
import NIOPosix
import VirtioUserIP
import VirtioUserIPNIO
import XCTest

/// swift-nio pipelines over VirtioUserIP's TCP connections (VirtioUserIPNIO), against the
/// kernel's sockets in the TAP's namespace, as IPStackTapTests are.
final class IPNIOChannelTests: XCTestCase {
    private static let ours = "192.0.2.2"

    func testNIOHTTPExampleAnswersAThousandCurlRequestsAndABody() async throws {
        let tap = try tapBackendInNamespace(self)
        let kernel = KernelSide(namespace: tap.namespace)
        try launchExample("nio-http-hello", [tap.backend.configuration.socketPath, "\(Self.ours)/24", "8080"])
        let url = "http://\(Self.ours):8080/"
        let answered = try await retry { try await kernel.run(["curl", "-s", "-m", "2", url]) == "hello" }
        XCTAssertTrue(answered, "nio-http-hello never answered")
        // 1,000 requests over up to 8 connections at once, keep-alive, through NIOHTTP1's codec.
        let urls = (1...1000).map { "\(url)\($0)" }
        let replies = try await kernel.run(["curl", "-s", "-m", "120", "--parallel", "--parallel-max", "8"] + urls)
        XCTAssertEqual(replies.split(separator: "\n").filter { $0 == "hello" }.count, 1000)
        // A 16 MiB body, read in many channelReads; then a client that asks to close.
        let posted = try await kernel.run(["sh", "-c", "head -c 16777216 /dev/urandom | curl -s -m 60 --data-binary @- \(url)"])
        XCTAssertEqual(posted, "received 16777216 bytes")
        let closing = try await kernel.run(["curl", "-s", "-m", "5", "-H", "Connection: close", url])
        XCTAssertEqual(closing, "hello")
    }

    /// 64 MiB echoed by a pipeline that stops reading while its writes wait (NIO's
    /// BackPressureHandler), then half-closed by each side in turn.
    func testAnEchoPipelineReturnsEveryByteAndHalfClosesAfterTheLast() async throws {
        let kernel = try serve(port: 5101, on: try loopGroup().next()) { channel in
            try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            try channel.pipeline.syncOperations.addHandlers([BackPressureHandler(), Echo()])
        }
        let total = 64 << 20
        let result = try await kernel.client(["tcp-echo", Self.ours, "5101", "\(total)"]).split(separator: " ")
        XCTAssertEqual(result.count, 4)
        XCTAssertEqual(result.first, "\(total)")
        XCTAssertEqual(result.dropFirst(2).first, "\(total)", "bytes echoed")
        XCTAssertEqual(result.dropFirst().first, result.last, "sha256 of what was sent and what came back")
    }

    /// A writer that writes its next batch from a write's promise (streaming, as NIO apps
    /// do): the writes it makes while the channel completes the batch's promises keep their
    /// order, and 8 MiB arrive intact.
    func testWritesMadeFromWritePromisesKeepTheirOrder() async throws {
        let digest = try SHA256Pipe()
        let total = 8 << 20
        let kernel = try serve(port: 5105, on: try loopGroup().next()) { channel in
            try channel.pipeline.syncOperations.addHandler(ChainedWriter(total: total, digest: digest))
        }
        let received = try await kernel.client(["tcp-receive", Self.ours, "5105"])
        XCTAssertEqual(received, "\(total) \(try digest.finish())")
    }

    /// A close right after a flush delivers everything flushed, as a socket's does (lwIP's
    /// send buffer holds 64 KiB; the rest waits in the channel), and then closes.
    func testACloseRightAfterAFlushDeliversEverythingFlushed() async throws {
        let digest = try SHA256Pipe()
        let total = 4 << 20
        let loop = try loopGroup().next()
        let closed = loop.makePromise(of: Void.self)
        let kernel = try serve(port: 5107, on: loop) { channel in
            try channel.pipeline.syncOperations.addHandler(WriteThenClose(total: total, digest: digest, closed: closed))
        }
        let received = try await kernel.client(["tcp-receive", Self.ours, "5107"])
        try await closed.futureResult.get()
        XCTAssertEqual(received, "\(total) \(try digest.finish())")
    }

    /// A peer that takes nothing while a close waits gets a reset after `closeLinger`, and
    /// the writes it did not take fail.
    func testALingeringCloseResetsAPeerThatTakesNothing() async throws {
        let digest = try SHA256Pipe()
        let total = 4 << 20
        let loop = try loopGroup().next()
        let closed = loop.makePromise(of: Void.self)
        let lostWrite = loop.makePromise(of: Void.self)
        let kernel = try serve(port: 5108, on: loop) { channel in
            try channel.syncOptions?.setOption(TCPConnectionChannelOptions.closeLinger, value: .milliseconds(500))
            XCTAssertEqual(try channel.syncOptions?.getOption(TCPConnectionChannelOptions.closeLinger), .milliseconds(500))
            let writer = WriteThenClose(total: total, digest: digest, closed: closed, lastWrite: lostWrite)
            try channel.pipeline.syncOperations.addHandler(writer)
        }
        let result = try await kernel.client(["tcp-stall", Self.ours, "5108", "2"]).split(separator: " ")
        try await closed.futureResult.get()
        XCTAssertEqual(result.last, "reset", "\(result)")
        XCTAssertLessThan(Int(result.first ?? "") ?? total, total)
        do {
            try await lostWrite.futureResult.get()
            XCTFail("the last write succeeded although the peer took nothing")
        } catch ChannelError.ioOnClosedChannel {}  // what NIO fails writes with at a close
        _ = try? digest.finish()
    }

    /// NIO's async API over a connection: an NIOAsyncChannel echo (`executeThenClose`), 16 MiB,
    /// half-closed after the peer's end of stream.
    func testAnNIOAsyncChannelEchoesEveryByte() async throws {
        let (kernel, interface) = try ourInterface()
        let group = try loopGroup()
        let listener = try interface.listen(port: 5109)
        let total = 16 << 20
        let echoed = kernel.clientTask(["tcp-echo", Self.ours, "5109", "\(total)"])
        let connection = try await acceptOne(listener, whileRunning: echoed)
        let loop = group.next()
        let wrapped = loop.makePromise(of: NIOAsyncChannel<ByteBuffer, ByteBuffer>.self)
        _ = connection.channel(on: loop) { channel in
            channel.eventLoop.makeCompletedFuture {
                do {
                    try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
                    let configuration = NIOAsyncChannel<ByteBuffer, ByteBuffer>.Configuration(isOutboundHalfClosureEnabled: true)
                    wrapped.succeed(try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: configuration))
                } catch {
                    wrapped.fail(error)
                    throw error
                }
            }
        }
        let channel = try await wrapped.futureResult.get()
        try await channel.executeThenClose { inbound, outbound in
            for try await buffer in inbound { try await outbound.write(buffer) }
        }
        let result = try await echoed.value.split(separator: " ")
        listener.close()
        XCTAssertEqual(result.count, 4)
        XCTAssertEqual(result.dropFirst(2).first, "\(total)", "bytes echoed")
        XCTAssertEqual(result.dropFirst().first, result.last, "sha256 of what was sent and what came back")
    }

    /// Without `allowRemoteHalfClosure`, the peer's end of stream closes the channel (after
    /// every byte was read), and the connection with it.
    func testThePeersEndOfStreamClosesAChannelThatDoesNotAllowHalfClosure() async throws {
        let (kernel, interface) = try ourInterface()
        let group = try loopGroup()
        let listener = try interface.listen(port: 5102)
        let loop = group.next()
        let report = loop.makePromise(of: [UInt8].self)
        let sent = kernel.clientTask(["tcp-send", Self.ours, "5102", "3000000"])
        let connection = try await acceptOne(listener, whileRunning: sent)
        let channel = try await connection.channel(on: loop) { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(report: report)) }
        }.get()
        XCTAssertEqual(channel.remoteAddress?.ipAddress, "192.0.2.1")
        XCTAssertEqual(channel.localAddress?.port, 5102)
        let received = try await report.futureResult.get()
        try await channel.closeFuture.get()
        XCTAssertFalse(channel.isActive)
        // tcp-send returns once we closed: the channel's close closed the connection.
        let expected = try await sent.value
        let digest = try SHA256Pipe()
        try digest.update(received)
        XCTAssertEqual(received.count, 3_000_000)
        XCTAssertEqual(try digest.finish(), expected)
        listener.close()
    }

    /// With `allowRemoteHalfClosure`, the pipeline hears `inputClosed` and still answers;
    /// `close(mode: .output)` sends what was flushed, fails what was not, then FIN. What the
    /// initializer wrote goes first.
    func testAHalfClosedChannelAnswersAndItsOutputCloseFailsWhatWasNotFlushed() async throws {
        let loop = try loopGroup().next()
        let unflushed = loop.makePromise(of: Void.self)
        let kernel = try serve(port: 5103, on: loop) { channel in
            try channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: true)
            try channel.pipeline.syncOperations.addHandler(Answerer(unflushed: unflushed))
            // Flushed before the channel is active: sent once it is.
            channel.writeAndFlush(channel.allocator.buffer(string: "welcome, "), promise: nil)
        }
        let answer = try await kernel.client(["tcp-ask", Self.ours, "5103", "1000000"])
        XCTAssertEqual(answer, "welcome, got 1000000")
        do {
            try await unflushed.futureResult.get()
            XCTFail("a write not flushed before close(mode: .output) succeeded")
        } catch ChannelError.outputClosed {}
    }

    /// A reset reaches the pipeline as `IPError.connectionReset` and closes the channel; a
    /// closed channel refuses writes and a second close. An initializer that fails resets the
    /// connection.
    func testAResetIsAnErrorInThePipelineAndClosesTheChannel() async throws {
        let (kernel, interface) = try ourInterface()
        let group = try loopGroup()
        let listener = try interface.listen(port: 5104)
        let loop = group.next()
        let report = loop.makePromise(of: [UInt8].self)
        var iterator = listener.makeAsyncIterator()
        async let reset = kernel.client(["tcp-reset", Self.ours, "5104", "\(4 << 20)"])
        let connection = try await XCTUnwrapAsync(try await iterator.next())
        let channel = try await connection.channel(on: loop) { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(report: report)) }
        }.get()
        do {
            _ = try await report.futureResult.get()
            XCTFail("a reset connection reached its end of stream")
        } catch let error as IPError {
            XCTAssertEqual(error, .connectionReset)
        }
        try await channel.closeFuture.get()
        _ = try await reset
        do {
            try await channel.writeAndFlush(channel.allocator.buffer(string: "too late")).get()
            XCTFail("a write on a closed channel succeeded")
        } catch ChannelError.ioOnClosedChannel {}
        do {
            try await channel.close().get()
            XCTFail("a closed channel closed again")
        } catch ChannelError.alreadyClosed {}

        async let refused = kernel.client(["tcp-read", Self.ours, "5104"])
        let next = try await XCTUnwrapAsync(try await iterator.next())
        do {
            _ = try await next.channel(on: loop) { channel in channel.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState) }.get()
            XCTFail("a failed initializer made a channel")
        } catch ChannelError.inappropriateOperationForState {}
        do {
            let read = try await refused
            XCTFail("the client of a failed initializer read \(read)")
        } catch {
            XCTAssertTrue("\(error)".contains("reset"), "\(error)")
        }

        // An initializer whose future completes on another loop: the channel starts on its own
        // (before, a precondition trapped), reads the client's bytes and closes at their end.
        let other = try loopGroup().next()
        let served = kernel.clientTask(["tcp-send", Self.ours, "5104", "100000"])
        let third = try await acceptOne(listener, whileRunning: served)
        let channel3 = try await third.channel(on: loop) { _ in other.makeSucceededVoidFuture() }.get()
        _ = try await served.value
        try await channel3.closeFuture.get()
        listener.close()
    }

    /// Our interface, listening on `port` with `configure`'s pipeline for each connection (on
    /// `loop`) until the test ends; the kernel's side.
    private func serve(port: UInt16, on loop: any EventLoop, _ configure: @escaping @Sendable (any Channel) throws -> Void) throws -> KernelSide {
        let (kernel, interface) = try ourInterface()
        let listener = try interface.listen(port: port)
        Task {
            try await listener.serve(on: loop) { channel in channel.eventLoop.makeCompletedFuture { try configure(channel) } }
        }
        addTeardownBlock { listener.close() }
        return kernel
    }

    private func loopGroup() throws -> MultiThreadedEventLoopGroup {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        addTeardownBlock { try await group.shutdownGracefully() }
        return group
    }
}

/// Writes back what it reads; closes its output after the peer's, and the channel after that.
private final class Echo: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed: context.close(mode: .output, promise: nil)
        case ChannelEvent.outputClosed: context.close(promise: nil)
        default: context.fireUserInboundEventTriggered(event)
        }
    }
}

/// Writes `total` bytes in batches of four 16 KiB writes and one flush; the first write's
/// promise writes the next batch, the last write's closes the channel.
private final class ChainedWriter: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let total: Int
    private let digest: SHA256Pipe
    private var sent = 0
    private var generator = SplitMix64(seed: 7)

    init(total: Int, digest: SHA256Pipe) {
        self.total = total
        self.digest = digest
    }

    func channelActive(context: ChannelHandlerContext) {
        writeBatch(context)
    }

    private func writeBatch(_ context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        for i in 0..<4 where sent < total {
            var block = [UInt8](repeating: 0, count: 16_384)
            generator.fill(&block)
            try? digest.update(block)
            sent += block.count
            let written = context.eventLoop.makePromise(of: Void.self)
            context.write(wrapOutboundOut(ByteBuffer(bytes: block)), promise: written)
            if sent >= total {
                written.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
            } else if i == 0 {
                written.futureResult.whenSuccess { self.writeBatch(bound.value) }
            }
        }
        context.flush()
    }
}

/// Writes `total` bytes in 64 KiB buffers, flushes, and closes at once; reports the close,
/// and (when asked) the last write's outcome.
private final class WriteThenClose: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let total: Int
    private let digest: SHA256Pipe
    private let closed: EventLoopPromise<Void>
    private let lastWrite: EventLoopPromise<Void>?

    init(total: Int, digest: SHA256Pipe, closed: EventLoopPromise<Void>, lastWrite: EventLoopPromise<Void>? = nil) {
        self.total = total
        self.digest = digest
        self.closed = closed
        self.lastWrite = lastWrite
    }

    func channelActive(context: ChannelHandlerContext) {
        var generator = SplitMix64(seed: 9)
        var sent = 0
        while sent < total {
            var block = [UInt8](repeating: 0, count: 65_536)
            generator.fill(&block)
            try? digest.update(block)
            sent += block.count
            context.write(wrapOutboundOut(ByteBuffer(bytes: block)), promise: sent >= total ? lastWrite : nil)
        }
        context.flush()
        context.close(promise: closed)
    }
}

/// Collects every byte; reports them when the channel goes inactive, or its first error.
private final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var bytes: [UInt8] = []
    private let report: EventLoopPromise<[UInt8]>

    init(report: EventLoopPromise<[UInt8]>) { self.report = report }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        bytes += unwrapInboundIn(data).readableBytesView
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        report.fail(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        report.succeed(bytes)
    }
}

/// Counts what it reads; at the peer's end of stream answers "got N", writes more without a
/// flush, and closes its output (which fails that write); then closes the channel.
private final class Answerer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var count = 0
    private let unflushed: EventLoopPromise<Void>

    init(unflushed: EventLoopPromise<Void>) { self.unflushed = unflushed }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        count += unwrapInboundIn(data).readableBytes
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case ChannelEvent.inputClosed:
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: "got \(count)")), promise: nil)
            context.write(wrapOutboundOut(context.channel.allocator.buffer(string: " and more")), promise: unflushed)
            context.close(mode: .output, promise: nil)
        case ChannelEvent.outputClosed:
            context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }
}
