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

        let tooLong = longest + "p"
        for path in [tooLong, String(repeating: "x", count: 300), ""] {
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in try UnixSocket.listen(at: path) }
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in try UnixSocket.connect(to: path) }
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in
                try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 60_000))
            }
        }
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
