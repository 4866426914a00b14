import NIOCore
import VirtioUserIP

/// Reads: each `read()` the pipeline asks for is answered with everything the connection has
/// received since the last (one `channelRead`), or, when nothing has, once something arrives.
extension TCPConnectionChannel {
    /// Asked for while the initializer runs, a read is answered once the channel is active.
    func read0() {
        guard lifecycle != .closed, closing == nil, !inputClosed else { return }
        readRequested = true
        if lifecycle == .open { deliver() }
    }

    /// Answers read requests while the connection has bytes; a read asked for inside a
    /// `channelRead` (auto-read) is answered by this loop, not by recursion. After
    /// `maxMessagesPerRead` answers it yields the loop to other channels.
    func deliver() {
        guard !delivering else { return }
        delivering = true
        defer { delivering = false }
        var answered: UInt = 0
        while readRequested, !waitingToRead, lifecycle == .open, closing == nil, !inputClosed {
            guard answered < maxMessagesPerRead else {
                eventLoop.execute { self.deliver() }
                return
            }
            guard let received = connection.receive() else {
                waitForBytes()
                return
            }
            readRequested = false
            answered += 1
            switch received {
            case .bytes(let bytes):
                pipeline.fireChannelRead(allocator.buffer(bytes: bytes))
                pipeline.fireChannelReadComplete()
                if autoRead, lifecycle == .open { pipeline.read() }
            case .end:
                peerFinished()
            case .failed(let error):
                failed(error)
            }
        }
    }

    private func waitForBytes() {
        waitingToRead = true
        connection.whenReadable {
            self.eventLoop.execute {
                self.waitingToRead = false
                self.deliver()
            }
        }
    }

    /// The peer half-closed: with `allowRemoteHalfClosure` the pipeline hears
    /// `ChannelEvent.inputClosed` and may still write; without, the channel closes.
    private func peerFinished() {
        inputClosed = true
        if allowRemoteHalfClosure {
            pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        } else {
            close0(error: ChannelError.eof, mode: .all, promise: nil)
        }
    }
}
