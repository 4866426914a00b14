import VhostUser
import VirtioCore
import XCTest

/// Replies the front-end must refuse: wrong code, no reply flag, wrong size, stray fds, late.
final class VhostUserFrontendBadReplyTests: XCTestCase {
    /// Runs getFeatures against a back-end that answers with `answer`.
    private func getFeatures(answeredWith answer: @escaping (VhostUserChannel) throws -> Void,
                             replyTimeoutMilliseconds: Int = 20_000) throws -> Result<VirtioFeatures, VirtioError> {
        try runScripted(replyTimeoutMilliseconds: replyTimeoutMilliseconds, frontend: { (f) throws(VirtioError) in
            try f.getFeatures()
        }, backend: { channel in
            try channel.expect(.getFeatures)
            try answer(channel)
            channel.expectFrontendDone()
        })
    }

    func testWellFormedReplyIsAccepted() throws {
        let result = try getFeatures(answeredWith: { try $0.reply(to: .getFeatures, value: 0x1_4000_0020) })
        XCTAssertEqual(try result.get(), [.version1, .vhostUserProtocolFeatures, .netMAC])
    }

    func testReplyWithTheWrongRequestCode() throws {
        let result = try getFeatures(answeredWith: { try $0.reply(to: .getProtocolFeatures, value: 0) })
        assertFailure(result, .peerProtocol)
    }

    func testReplyWithoutTheReplyFlag() throws {
        let result = try getFeatures(answeredWith: {
            try $0.send(request: .getFeatures, flags: 0, payload: littleEndianBytes(UInt64(1)))
        })
        assertFailure(result, .peerProtocol)
    }

    func testReplyOfTheWrongSize() throws {
        for size in [0, 4, 7, 9, 16] {
            let result = try getFeatures(answeredWith: {
                try $0.reply(to: .getFeatures, payload: [UInt8](repeating: 1, count: size))
            })
            assertFailure(result, .peerProtocol)
        }
    }

    func testReplyCarryingADescriptor() throws {
        let notifier = try EventNotifier()
        let result = try getFeatures(answeredWith: {
            try $0.send(request: .getFeatures, flags: VhostUserHeader.replyFlag, payload: littleEndianBytes(UInt64(1)),
                        descriptors: [notifier.descriptor.raw])
        })
        assertFailure(result, .peerProtocol)
    }

    func testReplyWithABadHeader() throws {
        let result = try getFeatures(answeredWith: { channel in
            rawWrite(rawHeader(request: 1, flags: 2 | VhostUserHeader.replyFlag, size: 8) + littleEndianBytes(UInt64(1)),
                     to: channel.socket)
        })
        assertFailure(result, .peerProtocol)
    }

    func testNoReplyTimesOut() throws {
        let result = try getFeatures(answeredWith: { _ in }, replyTimeoutMilliseconds: 100)
        assertFailure(result, .connection)
    }

    func testBackEndHangingUpIsPeerGone() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in try f.getQueueNum() },
                                     backend: { channel in try channel.expect(.getQueueNum) })
        assertFailure(result, .connection)
    }

    func testVringBaseForAnotherRingIsRefused() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in try f.getVringBase(index: 0) }, backend: { channel in
            try channel.expect(.getVringBase(VringState(index: 0, num: 0)))
            try channel.reply(to: .getVringBase, payload: littleEndianBytes(UInt32(1)) + littleEndianBytes(UInt32(100)))
            channel.expectFrontendDone()
        })
        assertFailure(result, .peerProtocol)
    }

    func testVringBaseReplyOfTheWrongSize() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in try f.getVringBase(index: 0) }, backend: { channel in
            try channel.expect(.getVringBase(VringState(index: 0, num: 0)))
            try channel.reply(to: .getVringBase, value: 0)
            channel.expectFrontendDone()
        })
        // A u64 of zero is 8 bytes: index 0, num 0, which is a valid answer.
        XCTAssertEqual(try result.get(), 0)

        let short = try runScripted(frontend: { (f) throws(VirtioError) in try f.getVringBase(index: 0) }, backend: { channel in
            try channel.expect(.getVringBase(VringState(index: 0, num: 0)))
            try channel.reply(to: .getVringBase, payload: littleEndianBytes(UInt32(0)))
            channel.expectFrontendDone()
        })
        assertFailure(short, .peerProtocol)
    }

    func testStatusWiderThanEightBitsIsRefused() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in try f.getStatus() }, backend: { channel in
            try channel.expect(.getStatus)
            try channel.reply(to: .getStatus, value: 0x100)
            channel.expectFrontendDone()
        })
        assertFailure(result, .peerProtocol)
    }
}
