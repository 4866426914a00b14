import NIOCore
import VirtioUserIP

extension TCPConnection {
    /// Runs a swift-nio pipeline over this connection: `initializer` adds the handlers (on
    /// `eventLoop`), then the channel becomes active and, under auto-read, reads.
    ///
    /// The channel's bytes are this connection's; closing either closes both. Options:
    /// auto-read, `allowRemoteHalfClosure`, `maxMessagesPerRead`, the write-buffer water
    /// marks (32 and 64 KiB by default) and ``TCPConnectionChannelOptions/closeLinger``. A
    /// write's promise succeeds when lwIP has taken its bytes; a close, like
    /// `close(mode: .output)`, sends the flushed writes first. If `initializer` fails, the
    /// connection is reset and the future fails with its error.
    public func channel(
        on eventLoop: any EventLoop,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any Channel> {
        eventLoop.flatSubmit {
            let channel = TCPConnectionChannel(connection: self, eventLoop: eventLoop)
            // On the channel's loop whichever loop the initializer's future completes on.
            return initializer(channel).hop(to: eventLoop).flatMapErrorThrowing { error in
                channel.abandon()
                throw error
            }.map {
                channel.start()
                return channel
            }
        }
    }
}

extension TCPListener {
    /// Serves each connection it accepts with a pipeline that `childChannelInitializer`
    /// sets up, on the next loop of `group` (as NIO's `ServerBootstrap` does for sockets);
    /// returns when the listener is closed, throws when the task is cancelled.
    public func serve(
        on group: any EventLoopGroup,
        childChannelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws(IPError) {
        for try await connection in self {
            _ = connection.channel(on: group.next(), initializer: childChannelInitializer)
        }
    }
}
