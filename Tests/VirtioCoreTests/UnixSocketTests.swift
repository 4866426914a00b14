#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import SystemPackage
import XCTest

/// AF_UNIX listen/connect/accept, retries, path limits and refusing to clobber files.
final class UnixSocketTests: XCTestCase {
    func testListenConnectAcceptRoundTrip() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("vhost.sock")
        let listener = try UnixSocket.listen(at: path)
        XCTAssertNil(try UnixSocket.accept(listener, milliseconds: 0), "nobody has connected yet")
        let client = try UnixSocket.connect(to: path)
        let server = try XCTUnwrap(UnixSocket.accept(listener, milliseconds: 10_000))

        try sendAll(Array("ping".utf8), on: client)
        XCTAssertEqual(try receive(4, on: server), Array("ping".utf8))
        try sendAll(Array("pong!".utf8), on: server)
        XCTAssertEqual(try receive(5, on: client), Array("pong!".utf8))
        XCTAssertNotEqual(fcntl(server.raw, F_GETFD) & FD_CLOEXEC, 0, "accepted sockets are close-on-exec")
        XCTAssertNotEqual(fcntl(client.raw, F_GETFD) & FD_CLOEXEC, 0)
    }

    func testConnectWithARetryPolicySucceedsAtOnceWhenListening() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("s")
        let listener = try UnixSocket.listen(at: path)
        _ = try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 10_000))
        XCTAssertNotNil(try UnixSocket.accept(listener, milliseconds: 10_000))
    }

    func testConnectKeepsRetryingUntilTheListenerAppears() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("late")
        let outcome = LockedBox<Result<OwnedDescriptor, VirtioError>>()
        let thread = try DedicatedThread(name: "connector") {
            let result = Result { () throws(VirtioError) in
                try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 30_000, intervalMilliseconds: 10))
            }
            outcome.set(result)
        }
        // Whether the first attempts fail or not, the connection must be made; the pause only
        // makes it likely that the ENOENT retry path runs.
        MonotonicClock.sleep(milliseconds: 100)
        let listener = try UnixSocket.listen(at: path)
        let server = try UnixSocket.accept(listener, milliseconds: 30_000)
        thread.join()
        XCTAssertNotNil(server)
        let client = try XCTUnwrap(outcome.value).get()
        XCTAssertGreaterThanOrEqual(client.raw, 0)
    }

    func testConnectToAMissingPathGivesUpAfterTheTimeout() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("nobody-here")
        let policy = UnixSocket.RetryPolicy(timeoutMilliseconds: 300, intervalMilliseconds: 20)
        let start = MonotonicClock.nanoseconds()
        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in try UnixSocket.connect(to: path, retry: policy) }
        let elapsedMilliseconds = (MonotonicClock.nanoseconds() - start) / 1_000_000
        XCTAssertEqual(error, .connection(.unreachable(path: path, errno: .noSuchFileOrDirectory)))
        XCTAssertGreaterThanOrEqual(elapsedMilliseconds, 300, "it must keep trying for the whole timeout")
        XCTAssertLessThan(elapsedMilliseconds, 5_000)
    }

    func testConnectOnceToAMissingPathFailsAtOnce() throws {
        let directory = try TemporaryDirectory()
        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in try UnixSocket.connect(to: directory.file("missing")) }
        XCTAssertEqual(error, .connection(.unreachable(path: directory.file("missing"), errno: .noSuchFileOrDirectory)))
    }

    func testConnectToAStaleSocketIsRefused() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("stale")
        do { _ = try UnixSocket.listen(at: path) }  // closed at once; the file stays
        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in try UnixSocket.connect(to: path) }
        XCTAssertEqual(error, .connection(.unreachable(path: path, errno: .connectionRefused)))
    }

    func testListenReplacesAStaleSocketFile() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("again")
        do { _ = try UnixSocket.listen(at: path) }
        let listener = try UnixSocket.listen(at: path)
        _ = try UnixSocket.connect(to: path)
        XCTAssertNotNil(try UnixSocket.accept(listener, milliseconds: 10_000))
    }

    func testListenRefusesToReplaceARegularFile() throws {
        let directory = try TemporaryDirectory()
        let path = directory.file("precious.txt")
        let fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(write(fd, "keep", 4), 4)
        close(fd)

        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in try UnixSocket.listen(at: path) }
        XCTAssertEqual(error, .connection(.notASocket(path: path)))
        var info = stat()
        XCTAssertEqual(lstat(path, &info), 0, "the file must not be deleted")
        XCTAssertEqual(info.st_size, 4)
    }

    func testListenRefusesADirectory() throws {
        let directory = try TemporaryDirectory()
        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in try UnixSocket.listen(at: directory.path) }
        XCTAssertEqual(error, .connection(.notASocket(path: directory.path)))
    }

    func testPathLengthLimits() throws {
        let limit = cvs_unix_path_max()
        XCTAssertEqual(limit, 107)
        let directory = try TemporaryDirectory()
        let prefix = directory.path + "/"
        let longest = prefix + String(repeating: "p", count: limit - prefix.utf8.count)
        XCTAssertEqual(longest.utf8.count, limit)
        let listener = try UnixSocket.listen(at: longest)
        _ = try UnixSocket.connect(to: longest)
        XCTAssertNotNil(try UnixSocket.accept(listener, milliseconds: 10_000))

        // Longer than sun_path yet not reachable through a directory: no '/', a file name too
        // long for /proc/self/fd/N/, longer than PATH_MAX, empty; an abstract name too long.
        let noDirectory = String(repeating: "x", count: 300)
        let longName = prefix + String(repeating: "d", count: 30) + "/" + String(repeating: "n", count: 83)
        let beyondPathMax = "/" + String(repeating: "d/", count: 2100) + "s"
        let abstractTooLong = "@" + String(repeating: "a", count: 107)
        for path in [noDirectory, longName, beyondPathMax, "", "@", abstractTooLong] {
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in try UnixSocket.listen(at: path) }
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in try UnixSocket.connect(to: path) }
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in
                try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 60_000))
            }
        }
    }

    /// A path longer than sun_path's 107 bytes (a container's deep mount point) is bound and
    /// reached through an O_PATH descriptor of its directory; the file is where it was asked.
    func testPathsLongerThanSunPathGoThroughTheirDirectory() throws {
        let directory = try TemporaryDirectory()
        var deep = directory.path
        var made: [String] = []
        while deep.utf8.count < 220 {
            deep += "/" + String(repeating: "d", count: 40)
            XCTAssertEqual(mkdir(deep, 0o755), 0)
            made.append(deep)
        }
        defer { for path in made.reversed() { rmdir(path) } }
        let path = deep + "/vhost.sock"
        XCTAssertGreaterThan(path.utf8.count, Int(cvs_unix_path_max()))
        do {
            let listener = try UnixListener(path: path, access: SocketFileAccess(mode: 0o600))
            var info = stat()
            XCTAssertEqual(lstat(path, &info), 0)
            XCTAssertEqual(info.st_mode & S_IFMT, S_IFSOCK)
            XCTAssertEqual(info.st_mode & 0o777, 0o600, "the access settings reach the long path too")
            _ = try UnixSocket.connect(to: path)
            XCTAssertNotNil(try listener.accept(milliseconds: 10_000))
            // A second listener sees a live socket there, through the same long path.
            let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in _ = try UnixListener(path: path) }
            XCTAssertEqual(error, .connection(.socketInUse(path: path, detail: "is a live socket: another process listens on it")))
        }
        var info = stat()
        XCTAssertNotEqual(lstat(path, &info), 0, "the listener removed its socket file")
    }

    /// `@name`: Linux's abstract namespace. No file anywhere; a name in use is refused; file
    /// permissions cannot apply.
    func testAbstractSockets() throws {
        let name = "@vcore-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let listener = try UnixListener(path: name)
        _ = try UnixSocket.connect(to: name)
        XCTAssertNotNil(try listener.accept(milliseconds: 10_000))
        var info = stat()
        XCTAssertNotEqual(lstat(name, &info), 0, "no file named like the socket appears")
        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in _ = try UnixListener(path: name) }
        XCTAssertEqual(error?.description.contains("abstract socket"), true, "\(String(describing: error))")
        assertThrowsVirtioError(.configuration) { () throws(VirtioError) in
            _ = try UnixListener(path: name + "-2", access: SocketFileAccess(mode: 0o660))
        }
        assertThrowsVirtioError(.connection) { () throws(VirtioError) in _ = try UnixSocket.connect(to: name + "-absent") }
    }

    /// A path ending in '/' is a directory the back-end will put its socket in: connect waits
    /// (bounded) for the one socket to appear there; two sockets are an error, not a guess.
    func testADirectoryPathWaitsForTheOneSocketInIt() throws {
        let directory = try TemporaryDirectory()
        let outcome = LockedBox<Result<OwnedDescriptor, VirtioError>>()
        let path = directory.path + "/"
        let thread = try DedicatedThread(name: "connector") {
            outcome.set(Result { () throws(VirtioError) in
                try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 30_000, intervalMilliseconds: 10))
            })
        }
        MonotonicClock.sleep(milliseconds: 100)
        let plainFile = open(directory.file("not-a-socket"), O_CREAT | O_WRONLY | O_CLOEXEC, 0o600)
        XCTAssertGreaterThanOrEqual(plainFile, 0)
        close(plainFile)
        let listener = try UnixListener(path: directory.file("the.sock"))
        thread.join()
        _ = try XCTUnwrap(outcome.value).get()
        XCTAssertNotNil(try listener.accept(milliseconds: 10_000))

        let second = try UnixListener(path: directory.file("other.sock"))
        let error = assertThrowsVirtioError(.configuration) { () throws(VirtioError) in
            _ = try UnixSocket.connect(to: directory.path + "/", retry: .init(timeoutMilliseconds: 1000))
        }
        XCTAssertEqual(error?.description.contains("other.sock, the.sock"), true, "\(String(describing: error))")
        withExtendedLifetime(second) {}
        let empty = try TemporaryDirectory()
        assertThrowsVirtioError(.connection) { () throws(VirtioError) in _ = try UnixSocket.connect(to: empty.path + "/") }
    }

    func testListenInAMissingDirectoryFails() {
        let error = assertThrowsVirtioError(.system) { () throws(VirtioError) in
            try UnixSocket.listen(at: "/nonexistent-dir-for-virtio-tests/x.sock")
        }
        XCTAssertEqual(error?.errno, .noSuchFileOrDirectory)
    }

    func testPairIsConnected() throws {
        let (a, b) = try UnixSocket.pair()
        try sendAll([1, 2, 3], on: a)
        XCTAssertEqual(try receive(3, on: b), [1, 2, 3])
        try sendAll([9], on: b)
        XCTAssertEqual(try receive(1, on: a), [9])
    }

    func testRetryPolicyClampsItsValues() {
        let policy = UnixSocket.RetryPolicy(timeoutMilliseconds: -5, intervalMilliseconds: 0)
        XCTAssertEqual(policy.timeoutMilliseconds, 0)
        XCTAssertEqual(policy.intervalMilliseconds, 1)
        XCTAssertEqual(UnixSocket.RetryPolicy.once.timeoutMilliseconds, 0)
    }

    // MARK: - Helpers

    private func sendAll(_ bytes: [UInt8], on socket: OwnedDescriptor) throws {
        let n = bytes.withUnsafeBytes { write(socket.raw, $0.baseAddress, $0.count) }
        XCTAssertEqual(n, bytes.count)
    }

    /// Reads exactly `count` bytes, waiting (boundedly) for them.
    private func receive(_ count: Int, on socket: OwnedDescriptor) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            guard try Poll.waitReadable(socket.raw, milliseconds: 10_000) == .readable else {
                XCTFail("no data within 10 s")
                return Array(bytes[0..<got])
            }
            let n = bytes.withUnsafeMutableBytes { read(socket.raw, $0.baseAddress! + got, count - got) }
            guard n > 0 else { XCTFail("read returned \(n)"); return Array(bytes[0..<got]) }
            got += n
        }
        return bytes
    }
}
