import NIOCore
import VirtioUserIP

/// Writes: queued until flushed; a flush hands lwIP what fits at once, and the rest goes when
/// an acknowledgement makes room (the stack's wake hops to the loop). Promises complete when
/// lwIP has taken their bytes (as a socket's do when the kernel has). Writability follows the
/// queue against the write-buffer water marks.
extension TCPConnectionChannel {
    /// Written (and flushed) while the initializer runs, bytes go once the channel is active.
    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard lifecycle != .closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        guard !outputClosed else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        switch tryUnwrapData(data, as: IOData.self) {
        case .byteBuffer(let buffer):
            pendingWrites.append(PendingWrite(buffer: buffer, promise: promise))
            pendingBytes += buffer.readableBytes
            if pendingBytes > waterMark.high { setWritable(false) }
        case .fileRegion:
            // No file descriptor reaches lwIP: read the file into a ByteBuffer instead.
            promise?.fail(ChannelError.operationUnsupported)
        case nil:
            promise?.fail(ChannelError.operationUnsupported)  // not bytes: a handler is missing
        }
    }

    func flush0() {
        guard lifecycle != .closed else { return }
        flushedCount = pendingWrites.count
        pump()
    }

    /// Hands lwIP the flushed writes, in order, as far as its send buffer takes them.
    func pump() {
        guard lifecycle == .open, !waitingToWrite else { return }
        if flushedCount > 0 {
            let (done, taken): (Int, Int)
            do {
                (done, taken) = try connection.send { sender in
                    var done = 0
                    var taken = 0
                    while done < flushedCount {
                        let more = done + 1 < flushedCount
                        let index = pendingWrites.index(pendingWrites.startIndex, offsetBy: done)
                        let count = pendingWrites[index].buffer.withUnsafeReadableBytes { sender.offer($0, more: more) }
                        taken += count
                        pendingWrites[index].buffer.moveReaderIndex(forwardBy: count)
                        guard pendingWrites[index].buffer.readableBytes == 0 else { break }
                        done += 1
                    }
                    return (done, taken)
                }
            } catch {
                failed(error)
                return
            }
            // Outside the core lock: promise callbacks may write again.
            pendingBytes -= taken
            flushedCount -= done
            for _ in 0..<done { pendingWrites.removeFirst().promise?.succeed() }
            if lifecycle == .open, pendingBytes < waterMark.low { setWritable(true) }
            guard lifecycle == .open else { return }
            if flushedCount > 0 {
                waitForRoom()
                return
            }
        }
        if outputClose.pending { shutdownOutputNow() }
    }

    private func waitForRoom() {
        waitingToWrite = true
        connection.whenWritable {
            self.eventLoop.execute {
                self.waitingToWrite = false
                self.pump()
            }
        }
    }

    /// `close(mode: .output)`: writes not flushed fail; the flushed ones go first, then FIN.
    func closeOutput(error: Error, promise: EventLoopPromise<Void>?) {
        guard lifecycle == .open else {
            promise?.fail(lifecycle == .closed ? ChannelError.alreadyClosed : ChannelError.inappropriateOperationForState)
            return
        }
        guard !outputClosed else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        outputClosed = true
        outputClose = (true, promise)
        failPendingWrites(from: flushedCount, with: error)
        pump()
    }

    private func shutdownOutputNow() {
        let promise = outputClose.promise
        outputClose = (false, nil)
        do {
            try connection.shutdownOutput()
        } catch {
            promise?.fail(error)
            failed(error)
            return
        }
        promise?.succeed()
        pipeline.fireUserInboundEventTriggered(ChannelEvent.outputClosed)
    }

    /// Fails the queued writes from `start` on (0: all of them).
    func failPendingWrites(from start: Int, with error: Error) {
        var failing: [EventLoopPromise<Void>?] = []
        while pendingWrites.count > start {
            let write = pendingWrites.removeLast()
            pendingBytes -= write.buffer.readableBytes
            failing.append(write.promise)
        }
        flushedCount = min(flushedCount, start)
        // In the order they were written.
        for promise in failing.reversed() { promise?.fail(error) }
        if lifecycle == .open, pendingBytes < waterMark.low { setWritable(true) }
    }
}
