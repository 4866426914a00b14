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

    /// How a server sorts a session's end: a departure is logged as news, a violation is also
    /// counted against the peer, anything else (our own failure, a timeout) is neither.
    func testEachCaseIsSortedAsADepartureAViolationOrNeither() {
        let departures: [VirtioError] = [
            .connection(.closedByPeer(during: "", errno: nil)),
            .connection(.closedByPeer(during: "while we read a message header", errno: .connectionReset)),
            .connection(.listenerClosed),
        ]
        let violations: [VirtioError] = [
            .peerProtocol(.malformedMessage(request: "SET_FEATURES", problem: "short")),
            .peerProtocol(.beyondOffer(request: "SET_FEATURES", asked: 3, offered: 1)),
            .ringViolation(.usedIndexJump(count: 9, outstanding: 1)),
            .ringViolation(.kickBlocked(milliseconds: 10)),
            .memory(.outsideSharedMemory(address: 1, length: 2)),
            .memory(.regionShrunk(region: 0)),
            .memory(.unreadable(what: "a frame")),
        ]
        let neither: [VirtioError] = [
            .connection(.timedOut(waitingFor: "a message header")),
            .connection(.unreachable(path: "/x", errno: .connectionRefused)),
            .memory(.hugepagesUnavailable(pageSize: 2 << 20, bytes: 1, errno: .noMemory)),
            .memory(.holePunched),
            .system(SystemCallFailure(operation: "write to the peer's eventfd", errno: .badFileDescriptor)),
            .configuration(InvalidSetting(field: "mtu", value: "1", requirement: "68…65535")),
            .state(.stopped("This back-end")),
            .negotiation(.queuePairs(offered: 1, wanted: 2)),
        ]
        for error in departures {
            XCTAssertTrue(error.isDeparture, "\(error)")
            XCTAssertFalse(error.isPeerViolation, "\(error)")
        }
        for error in violations {
            XCTAssertFalse(error.isDeparture, "\(error)")
            XCTAssertTrue(error.isPeerViolation, "\(error)")
        }
        for error in neither {
            XCTAssertFalse(error.isDeparture, "\(error)")
            XCTAssertFalse(error.isPeerViolation, "\(error)")
        }
    }

    /// A write to an eventfd that fails with an errno is a failed system call, not a peer's
    /// violation; one that would block past its timeout is the peer's doing.
    func testAFailedEventfdWriteIsASystemErrorAndABlockedOneAViolation() {
        XCTAssertEqual(EventNotifier.signalFailure(-EBADF).domain, .system)
        XCTAssertEqual(EventNotifier.signalFailure(-EBADF).errno, .badFileDescriptor)
        XCTAssertEqual(EventNotifier.signalFailure(-ETIMEDOUT), .ringViolation(.kickBlocked(milliseconds: 10)))
    }
}
