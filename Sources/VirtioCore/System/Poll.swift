#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim

/// Waiting for descriptors to become readable, with a deadline.
@usableFromInline package enum Poll {
    /// What `waitReadable` saw on the descriptor.
    @usableFromInline package enum Readiness: Sendable, Equatable {
        /// Data (or a pending close) can be read.
        case readable
        /// The peer hung up or the descriptor is in error.
        case hungUp
        /// The time ran out first.
        case timedOut
    }

    /// Waits up to `milliseconds` (negative: forever) for `fd` to become readable.
    @usableFromInline package static func waitReadable(_ fd: Int32, milliseconds: Int32) throws(VirtioError) -> Readiness {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = try SystemCall.run("poll") { Glibc.poll(&entry, 1, milliseconds) }
        if n == 0 { return .timedOut }
        if entry.revents & Int16(POLLIN) != 0 { return .readable }
        return .hungUp
    }

    /// Waits up to `milliseconds` (negative: forever) for `fd` to take more data; false when
    /// the time ran out first. A descriptor in error counts as ready (the write reports it).
    @usableFromInline package static func waitWritable(_ fd: Int32, milliseconds: Int32) throws(VirtioError) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        return try SystemCall.run("poll") { Glibc.poll(&entry, 1, milliseconds) } > 0
    }

    /// Waits up to `milliseconds` for any of `fds` to become readable; returns the indices
    /// that are (readable or hung up). Used by idle loops that sleep on kicks and a socket.
    @usableFromInline package static func waitAny(_ fds: [Int32], milliseconds: Int32) throws(VirtioError) -> [Int] {
        var entries = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        let count = entries.count
        let n = try entries.withUnsafeMutableBufferPointer { (buffer) throws(VirtioError) -> Int32 in
            try SystemCall.run("poll") { Glibc.poll(buffer.baseAddress, nfds_t(count), milliseconds) }
        }
        if n == 0 { return [] }
        return entries.indices.filter { entries[$0].revents != 0 }
    }

    /// Waits up to `milliseconds` for the stream socket `fd` to be closed by its peer; true if
    /// it was. Data waiting to be read does not wake it (and is not consumed).
    @usableFromInline package static func waitHangUp(_ fd: Int32, milliseconds: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(CVS_POLLRDHUP), revents: 0)
        let (n, _) = SystemCall.attempt { Glibc.poll(&entry, 1, milliseconds) }
        guard n > 0 else { return false }
        return entry.revents & Int16(Int32(CVS_POLLRDHUP) | POLLHUP | POLLERR | POLLNVAL) != 0
    }

    /// True when the stream socket `fd` has been closed by its peer (without consuming data).
    @usableFromInline package static func peerHasClosed(_ fd: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN | Int32(CVS_POLLRDHUP)), revents: 0)
        let (n, _) = SystemCall.attempt { Glibc.poll(&entry, 1, 0) }
        guard n > 0 else { return false }
        return entry.revents & Int16(Int32(CVS_POLLRDHUP) | POLLHUP | POLLERR | POLLNVAL) != 0
    }
}
