#if canImport(Glibc)
import Glibc
#endif
import VhostUser
import VirtioCore
import XCTest

/// Runs a `VhostUserFrontend` on its own thread against a back-end scripted on the test thread.
///
/// The front-end's calls run in `frontend` on a `DedicatedThread`; `backend` plays the peer over
/// the other end of a socketpair with a `VhostUserChannel`. When `frontend` returns, its socket
/// is shut down, so a script can wait for that deterministically with ``expectFrontendDone(_:)``.
/// When the script returns, the back-end's socket is shut down too, so a front-end still waiting
/// for a reply sees `.peerGone` instead of hanging.
func runScripted<T: Sendable>(
    replyTimeoutMilliseconds: Int = 20_000,
    frontend: @escaping @Sendable (VhostUserFrontend) throws(VirtioError) -> T,
    backend: (VhostUserChannel) throws -> Void
) throws -> Result<T, VirtioError> {
    let (frontSocket, backSocket) = try UnixSocket.pair()
    let outcome = LockedBox<Result<T, VirtioError>>()
    let thread = try DedicatedThread(name: "vu-frontend") {
        let session = VhostUserFrontend(socket: frontSocket, replyTimeoutMilliseconds: replyTimeoutMilliseconds)
        outcome.set(Result { () throws(VirtioError) in try frontend(session) })
        _ = shutdown(frontSocket.raw, Int32(SHUT_RDWR))
    }
    var scriptError: (any Error)?
    do {
        try backend(VhostUserChannel(socket: backSocket))
    } catch {
        scriptError = error
    }
    _ = shutdown(backSocket.raw, Int32(SHUT_RDWR))
    thread.join()
    if let scriptError { throw scriptError }
    guard let result = outcome.value else {
        XCTFail("the front-end thread left no result")
        throw VirtioError.state(.stopped("the front-end thread"))
    }
    return result
}

extension VhostUserChannel {
    /// Receives the next request, decodes it with the fds that came with it and checks that it
    /// is `expected`, with the need-reply flag as given. Returns the frame for further checks.
    @discardableResult
    func expect(_ expected: VhostUserMessage, needReply: Bool = false,
                file: StaticString = #filePath, line: UInt = #line) throws -> VhostUserFrame {
        let frame = try receive(timeoutMilliseconds: 20_000)
        let message = try VhostUserMessage.decode(header: frame.header, payload: frame.payload,
                                                  descriptorCount: frame.descriptors.count)
        XCTAssertEqual(message, expected, file: file, line: line)
        XCTAssertEqual(frame.header.needsReply, needReply, "need-reply flag of \(frame.header.request)", file: file, line: line)
        return frame
    }

    /// Answers `request` with a u64.
    func reply(to request: VhostUserRequest, value: UInt64) throws {
        try reply(to: request, payload: littleEndianBytes(value))
    }

    /// Waits until the front-end has finished (its socket is shut down once its body returns).
    func expectFrontendDone(file: StaticString = #filePath, line: UInt = #line) {
        do throws(VirtioError) {
            let frame = try receive(timeoutMilliseconds: 20_000)
            XCTFail("unexpected \(frame.header.request) from the front-end", file: file, line: line)
        } catch {
            XCTAssertTrue(error.isDeparture, "\(error)", file: file, line: line)
        }
    }
}
