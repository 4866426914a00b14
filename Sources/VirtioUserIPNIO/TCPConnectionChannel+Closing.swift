import NIOCore
import VirtioUserIP

/// Closing. A close keeps the writes already flushed that lwIP has not taken yet, as the kernel
/// keeps a closed socket's send buffer: they go first, then the connection closes and the
/// channel goes inactive. (lwIP's send buffer is 64 KiB where a kernel's is megabytes, so
/// without this, `writeAndFlush` then `close` — NIOAsyncChannel's `executeThenClose` does just
/// that — would lose what a socket delivers.) Writes not flushed fail. A peer that has not
/// taken them within ``TCPConnectionChannelOptions/closeLinger`` gets a reset, and they fail. A
/// failed connection closes at once.
extension TCPConnectionChannel {
    func close0(error: Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
        case .output:
            closeOutput(error: error, promise: promise)
        case .all:
            guard lifecycle != .closed, closing == nil else {
                promise?.fail(ChannelError.alreadyClosed)
                return
            }
            guard lifecycle == .open, flushedCount > 0 else {
                finishClose(error: error, promise: promise)
                return
            }
            guard closeLinger > .zero else {
                connection.abort()
                finishClose(error: error, promise: promise)
                return
            }
            active.store(false, ordering: .relaxed)
            readRequested = false
            failPendingWrites(from: flushedCount, with: error)
            let deadline = eventLoop.scheduleTask(in: closeLinger) { self.lingerExpired() }
            closing = Closing(error: error, promise: promise, deadline: deadline)
            pump()
        }
    }

    /// Called by `pump()` once the flushed writes are all taken.
    func lingerDone() {
        guard let closing else { return }
        self.closing = nil
        closing.deadline.cancel()
        finishClose(error: closing.error, promise: closing.promise)
    }

    private func lingerExpired() {
        guard let closing else { return }
        self.closing = nil
        connection.abort()
        finishClose(error: closing.error, promise: closing.promise)
    }

    /// The channel closes now: the connection (lwIP still delivers what it took, then FIN),
    /// the writes left, the close promise, then channelInactive and channelUnregistered.
    func finishClose(error: Error, promise: EventLoopPromise<Void>?) {
        // Closed by a handler while the initializer ran: never active, so never inactive.
        let wasActive = lifecycle == .open
        lifecycle = .closed
        active.store(false, ordering: .relaxed)
        connection.close()
        failPendingWrites(from: 0, with: error)
        outputClose.promise?.fail(error)
        outputClose = (false, nil)
        promise?.succeed()
        if wasActive {
            pipeline.fireChannelInactive()
            pipeline.fireChannelUnregistered()
        }
        eventLoop.execute {
            self.removeHandlers(pipeline: self.pipeline)
            self.closePromise.succeed()
            self.keepAlive = nil
        }
    }
}
