import NIOCore
import VirtioUserIP

/// Writes: queued until flushed; a flush hands lwIP what fits at once, and the rest goes when
/// an acknowledgement makes room (the stack's wake hops to the loop). Promises complete when
/// lwIP has taken their bytes (as a socket's do when the kernel has). Writability follows the
/// queue against the write-buffer water marks.
extension TCPConnectionChannel {
    /// Written (and flushed) while the initializer runs, bytes go once the channel is active.
    func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard lifecycle != .closed, closing == nil else {
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
        guard lifecycle != .closed, closing == nil else { return }
        flushedCount = pendingWrites.count
        pump()
    }

    /// Hands lwIP the flushed writes, in order, as far as its send buffer takes them. What
    /// promise callbacks write and flush meanwhile is taken by this loop, not by recursion.
    func pump() {
        guard !pumping else { return }
        pumping = true
        defer { pumping = false }
        while lifecycle == .open, !waitingToWrite {
            guard flushedCount > 0 else {
                if closing != nil {
                    lingerDone()
                } else if outputClose.pending {
                    shutdownOutputNow()
                }
                return
            }
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
            // The queue is settled before any promise runs (its callbacks may write, flush or
            // close), and outside the core lock.
            pendingBytes -= taken
            flushedCount -= done
            let full = flushedCount > 0
            var succeeded: [EventLoopPromise<Void>] = []
            for _ in 0..<done {
                if let promise = pendingWrites.removeFirst().promise { succeeded.append(promise) }
            }
            if pendingBytes < waterMark.low { setWritable(true) }
            for promise in succeeded { promise.succeed() }
            if full, lifecycle == .open, !waitingToWrite { waitForRoom() }
        }
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
        guard lifecycle == .open, closing == nil else {
            promise?.fail(lifecycle == .initializing ? ChannelError.inappropriateOperationForState : ChannelError.alreadyClosed)
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
