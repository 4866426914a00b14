#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import SystemPackage

/// AF_UNIX stream sockets: the vhost-user control channel.
@usableFromInline package enum UnixSocket {
    /// How a client keeps trying while the listening side is not there yet.
    @usableFromInline package struct RetryPolicy: Sendable, Equatable {
        /// Total time to keep trying, in milliseconds (0: one attempt).
        @usableFromInline package var timeoutMilliseconds: Int
        /// Pause between attempts, in milliseconds.
        @usableFromInline package var intervalMilliseconds: Int

        /// Creates a policy.
        @usableFromInline package init(timeoutMilliseconds: Int, intervalMilliseconds: Int = 100) {
            self.timeoutMilliseconds = max(0, timeoutMilliseconds)
            self.intervalMilliseconds = max(1, intervalMilliseconds)
        }

        /// One attempt, no waiting.
        @usableFromInline package static let once = RetryPolicy(timeoutMilliseconds: 0)
    }

    /// Connects to the socket at `path`, retrying while it does not exist or refuses
    /// (ENOENT, ECONNREFUSED, EAGAIN) until the policy's time is up.
    @usableFromInline package static func connect(to path: String, retry: RetryPolicy = .once) throws(VirtioError) -> OwnedDescriptor {
        try checkPathLength(path)
        let deadline = MonotonicClock.deadline(milliseconds: retry.timeoutMilliseconds, after: MonotonicClock.nanoseconds())
        while true {
            let socket = OwnedDescriptor(taking: try SystemCall.run("socket(AF_UNIX)") { cvs_unix_socket() })
            let (result, code) = SystemCall.attempt { cvs_unix_connect(socket.raw, path) }
            if result == 0 { return socket }
            let retryable = code == ENOENT || code == ECONNREFUSED || code == EAGAIN
            if !retryable || MonotonicClock.nanoseconds() >= deadline {
                throw .connection(.unreachable(path: path, errno: Errno(rawValue: code)))
            }
            MonotonicClock.sleep(milliseconds: retry.intervalMilliseconds)
        }
    }

    /// Creates a listening socket at `path`, with `access` applied to its file. A stale socket
    /// file left by a dead process is removed first; a socket another process still listens on,
    /// and any other existing file, are refused rather than deleted.
    @usableFromInline package static func listen(at path: String, backlog: Int32 = 4, access: SocketFileAccess = .init()) throws(VirtioError) -> OwnedDescriptor {
        try checkPathLength(path)
        try access.validate()
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                throw .connection(.notASocket(path: path))
            }
            if let reason = liveness(of: path) {
                throw .connection(.socketInUse(path: path, detail: reason))
            }
            _ = unlink(path)
        }
        let socket = OwnedDescriptor(taking: try SystemCall.run("socket(AF_UNIX)") { cvs_unix_socket() })
        _ = try SystemCall.run("bind(\(path))", hint: "Check that the directory exists and is writable.") {
            cvs_unix_bind(socket.raw, path)
        }
        do throws(VirtioError) {
            try access.apply(to: path)
        } catch {
            _ = unlink(path)
            throw error
        }
        _ = try SystemCall.run("listen(\(path))") { Glibc.listen(socket.raw, backlog) }
        return socket
    }

    /// Why the socket file at `path` must not be removed — a process listens on it, or we cannot
    /// tell — or nil when nobody does (connecting is refused: its process is gone).
    static func liveness(of path: String) -> String? {
        let probe = cvs_unix_socket()
        guard probe >= 0 else { return nil }
        defer { close(probe) }
        // Non-blocking: a listener whose backlog is full answers EAGAIN instead of making us wait.
        _ = fcntl(probe, F_SETFL, fcntl(probe, F_GETFL) | O_NONBLOCK)
        let (result, code) = SystemCall.attempt { cvs_unix_connect(probe, path) }
        if result == 0 || code == EAGAIN || code == EINPROGRESS { return "is a live socket: another process listens on it" }
        if code == ECONNREFUSED || code == ENOENT { return nil }
        return "is a socket whose listener cannot be checked (connect: \(String(cString: strerror(code))))"
    }

    /// Accepts one connection on a listening socket, waiting at most `milliseconds`
    /// (negative: forever). Returns nil when the time ran out.
    @usableFromInline package static func accept(_ listener: OwnedDescriptor, milliseconds: Int32) throws(VirtioError) -> OwnedDescriptor? {
        switch try Poll.waitReadable(listener.raw, milliseconds: milliseconds) {
        case .timedOut: return nil
        case .hungUp: throw .connection(.listenerClosed)
        case .readable: break
        }
        let (fd, code) = SystemCall.attempt { cvs_accept_cloexec(listener.raw) }
        if fd >= 0 { return OwnedDescriptor(taking: fd) }
        if code == EAGAIN || code == ECONNABORTED { return nil }
        throw VirtioError.system("accept", errno: code)
    }

    /// A connected pair (for tests and in-process peers).
    @usableFromInline package static func pair() throws(VirtioError) -> (OwnedDescriptor, OwnedDescriptor) {
        var fds: [Int32] = [-1, -1]
        _ = try SystemCall.run("socketpair") {
            socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        }
        return (OwnedDescriptor(taking: fds[0]), OwnedDescriptor(taking: fds[1]))
    }

    static func checkPathLength(_ path: String) throws(VirtioError) {
        let limit = cvs_unix_path_max()
        if path.utf8.isEmpty || path.utf8.count > limit {
            throw .invalid("socket path", "'\(path)'", "1…\(limit) bytes long (the limit of sun_path); use a shorter path")
        }
    }
}
