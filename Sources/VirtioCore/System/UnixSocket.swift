#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import SystemPackage

/// AF_UNIX stream sockets: the vhost-user control channel.
///
/// A path is a filesystem path — one longer than sun_path's 107 bytes is reached through its
/// directory (/proc/self/fd/N/name), as containers with deep mount points need — or `@name`, a
/// socket in Linux's abstract namespace: no file, scoped to the network namespace, gone with
/// its last listener.
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
    /// A path ending in `/` names a directory: the one socket in it, once there is one.
    @usableFromInline package static func connect(to path: String, retry: RetryPolicy = .once) throws(VirtioError) -> OwnedDescriptor {
        try checkPathLength(path)
        let deadline = MonotonicClock.deadline(milliseconds: retry.timeoutMilliseconds, after: MonotonicClock.nanoseconds())
        while true {
            var code = ENOENT
            if let target = try resolve(path) {
                let socket = OwnedDescriptor(taking: try SystemCall.run("socket(AF_UNIX)") { cvs_unix_socket() })
                let result: Int32
                (result, code) = SystemCall.attempt { cvs_unix_connect(socket.raw, target) }
                if result == 0 { return socket }
            }
            let retryable = code == ENOENT || code == ECONNREFUSED || code == EAGAIN
            if !retryable || MonotonicClock.nanoseconds() >= deadline {
                throw .connection(.unreachable(path: path, errno: Errno(rawValue: code)))
            }
            MonotonicClock.sleep(milliseconds: retry.intervalMilliseconds)
        }
    }

    /// The socket to connect to for `path`: itself, or for a directory (`path` ends in `/`) the
    /// one socket in it — nil while there is none.
    private static func resolve(_ path: String) throws(VirtioError) -> String? {
        guard path.hasSuffix("/") else { return path }
        let names = SocketDirectory.sockets(in: path)
        guard names.count <= 1 else {
            throw .invalid("socket directory", "'\(path)'", "a directory with one socket in it; it holds \(names.joined(separator: ", ")): give the path of the one to use")
        }
        return names.first.map { path + $0 }
    }

    /// Creates a listening socket at `path`, with `access` applied to its file. A stale socket
    /// file left by a dead process is removed first; a socket another process still listens on,
    /// and any other existing file, are refused rather than deleted.
    @usableFromInline package static func listen(at path: String, backlog: Int32 = 4, access: SocketFileAccess = .init()) throws(VirtioError) -> OwnedDescriptor {
        try checkPathLength(path)
        if isAbstract(path) { return try listenAbstract(at: path, backlog: backlog, access: access) }
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

    /// An abstract socket: nothing to replace or protect, and no file for `access`; a name in
    /// use is refused by bind.
    private static func listenAbstract(at path: String, backlog: Int32, access: SocketFileAccess) throws(VirtioError) -> OwnedDescriptor {
        guard access == SocketFileAccess() else {
            throw .invalid("socket access", "mode/group for '\(path)'", "nothing: an abstract socket has no file to set them on (any process in the network namespace may connect)")
        }
        let socket = OwnedDescriptor(taking: try SystemCall.run("socket(AF_UNIX)") { cvs_unix_socket() })
        let (result, code) = SystemCall.attempt { cvs_unix_bind(socket.raw, path) }
        if result != 0 {
            if code == EADDRINUSE {
                throw .connection(.socketInUse(path: path, detail: "is an abstract socket another process in this network namespace listens on"))
            }
            throw VirtioError.system("bind(\(path))", errno: code)
        }
        _ = try SystemCall.run("listen(\(path))") { Glibc.listen(socket.raw, backlog) }
        return socket
    }

    /// `@name`: a socket in the abstract namespace.
    @usableFromInline package static func isAbstract(_ path: String) -> Bool { path.utf8.first == UInt8(ascii: "@") }

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

    /// The longest last component of a path longer than sun_path: it must fit after
    /// "/proc/self/fd/<up to 10 digits>/".
    static let longPathNameLimit = cvs_unix_path_max() - 25

    static func checkPathLength(_ path: String) throws(VirtioError) {
        let bytes = path.utf8
        if isAbstract(path) {
            let limit = cvs_unix_path_max() - 1
            guard (2...(limit + 1)).contains(bytes.count) else {
                throw .invalid("socket path", "'\(path)'", "an abstract name of 1…\(limit) bytes after '@'")
            }
            return
        }
        let limit = cvs_unix_long_path_max()
        guard !bytes.isEmpty, bytes.count <= limit, !bytes.contains(0) else {
            throw .invalid("socket path", "'\(path)'", "1…\(limit) bytes long")
        }
        guard bytes.count > cvs_unix_path_max() else { return }
        let nameLength = bytes.lastIndex(of: UInt8(ascii: "/")).map { bytes.distance(from: $0, to: bytes.endIndex) - 1 } ?? 0
        guard (1...longPathNameLimit).contains(nameLength) else {
            throw .invalid("socket path", "'\(path)'", "a file name of at most \(longPathNameLimit) bytes after the last '/' (a path longer than \(cvs_unix_path_max()) bytes is reached through its directory)")
        }
    }
}
