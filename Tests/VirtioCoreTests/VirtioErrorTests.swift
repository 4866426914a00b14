#if canImport(Glibc)
import Glibc
#endif
import VirtioCore
import SystemPackage
import XCTest

/// The error type's message forms, and SystemCall's errno handling.
final class VirtioErrorTests: XCTestCase {
    func testSystemErrorNamesTheCallTheReasonAndTheHint() {
        let error = VirtioError.system("open(/x)", errno: ENOENT, hint: "Create it first.")
        XCTAssertEqual(error, .system(SystemCallFailure(operation: "open(/x)", errno: .noSuchFileOrDirectory, advice: "Create it first.")))
        XCTAssertEqual(error.errno, .noSuchFileOrDirectory)
        XCTAssertEqual(error.description, "open(/x) failed: No such file or directory (errno 2). Create it first.")
        XCTAssertEqual(VirtioError.system("poll", errno: EBADF).description, "poll failed: Bad file descriptor (errno 9).")
    }

    func testSystemCallRunThrowsOnFailure() {
        let error = assertThrowsVirtioError(.system) { () throws(VirtioError) in
            try SystemCall.run("close(-1)") { close(-1) }
        }
        XCTAssertEqual(error?.errno, .badFileDescriptor)
        XCTAssertEqual(error, .system(SystemCallFailure(operation: "close(-1)", errno: .badFileDescriptor)))
    }

    func testSystemCallRunRetriesEINTR() throws {
        var calls = 0
        let result = try SystemCall.run("flaky") { () -> Int32 in
            calls += 1
            if calls < 3 { errno = EINTR; return -1 }
            return 7
        }
        XCTAssertEqual(result, 7)
        XCTAssertEqual(calls, 3)
    }

    func testSystemCallAttemptReturnsTheErrno() {
        let (n, code) = SystemCall.attempt { close(-1) }
        XCTAssertEqual(n, -1)
        XCTAssertEqual(code, EBADF)
        let (ok, none) = SystemCall.attempt { Int32(0) }
        XCTAssertEqual(ok, 0)
        XCTAssertEqual(none, 0)
    }

    func testDedicatedThreadRunsItsBodyBeforeJoinReturns() throws {
        let box = LockedBox<Int>()
        let thread = try DedicatedThread(name: "a-name-longer-than-fifteen-bytes") { box.set(42) }
        thread.join()
        XCTAssertEqual(box.value, 42)
    }
}
