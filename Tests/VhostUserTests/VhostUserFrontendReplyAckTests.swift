import VhostUser
import VirtioCore
import XCTest

/// Once REPLY_ACK is negotiated, every request without a reply of its own asks for an ack and
/// waits for it; a nonzero ack is an error.
final class VhostUserFrontendReplyAckTests: XCTestCase {
    func testEverySetCallAsksForAnAck() throws {
        let kick = try EventNotifier(), call = try EventNotifier()
        let memory = try SharedMemoryRegion(minimumSize: 4096)
        let region = MessageSamples.regions(1)[0]
        let result = try runScripted(frontend: { (f) throws(VirtioError) in
            try f.setProtocolFeatures([.replyAck, .multiqueue])
            XCTAssertEqual(f.protocolFeatures, [.replyAck, .multiqueue])
            try f.setOwner()
            try f.setFeatures([.version1, .vhostUserProtocolFeatures])
            try f.setMemTable([region], descriptors: [memory.descriptor.raw])
            try f.setVringNum(index: 1, size: 512)
            try f.setVringBase(index: 1, base: 0)
            try f.setVringAddr(MessageSamples.address)
            try f.setVringKick(index: 1, notifier: kick)
            try f.setVringCall(index: 1, notifier: call)
            try f.setVringEnable(index: 1, enabled: true)
            try f.setStatus([.acknowledge])
            try f.resetOwner()
            // Requests with replies of their own do not ask for an ack.
            return try f.getFeatures()
        }, backend: { channel in
            // SET_PROTOCOL_FEATURES itself goes out before REPLY_ACK is in force.
            try channel.expect(.setProtocolFeatures([.replyAck, .multiqueue]), needReply: false)
            let acked: [VhostUserMessage] = [
                .setOwner, .setFeatures([.version1, .vhostUserProtocolFeatures]), .setMemTable([region]),
                .setVringNum(VringState(index: 1, num: 512)), .setVringBase(VringState(index: 1, num: 0)),
                .setVringAddr(MessageSamples.address), .setVringKick(VringFile(index: 1, hasDescriptor: true)),
                .setVringCall(VringFile(index: 1, hasDescriptor: true)), .setVringEnable(VringState(index: 1, num: 1)),
                .setStatus(1), .resetOwner,
            ]
            for message in acked {
                try channel.expect(message, needReply: true)
                try channel.reply(to: message.request, value: 0)
            }
            try channel.expect(.getFeatures, needReply: false)
            try channel.reply(to: .getFeatures, value: 1 << 32)
        })
        XCTAssertEqual(try result.get(), .version1)
    }

    func testNonzeroAckIsAnError() throws {
        for status: UInt64 in [1, 0xFF, UInt64.max] {
            let result = try runScripted(frontend: { (f) throws(VirtioError) in
                try f.setProtocolFeatures([.replyAck])
                try f.setVringNum(index: 0, size: 1 << 20)
                try f.setOwner()  // never reached
            }, backend: { channel in
                try channel.expect(.setProtocolFeatures([.replyAck]))
                try channel.expect(.setVringNum(VringState(index: 0, num: 1 << 20)), needReply: true)
                try channel.reply(to: .setVringNum, value: status)
                channel.expectFrontendDone()
            })
            if case .failure(let error) = result {
                XCTAssertEqual(error, .negotiation(.requestRejected(request: "SET_VRING_NUM", status: status)))
            } else {
                XCTFail("a nonzero REPLY_ACK (\(status)) was taken for success")
            }
        }
    }

    func testAckForTheWrongRequestIsAnError() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in
            try f.setProtocolFeatures([.replyAck])
            try f.setOwner()
        }, backend: { channel in
            try channel.expect(.setProtocolFeatures([.replyAck]))
            try channel.expect(.setOwner, needReply: true)
            try channel.reply(to: .setFeatures, value: 0)
            channel.expectFrontendDone()
        })
        assertFailure(result, .peerProtocol)
    }

    func testMissingAckTimesOut() throws {
        let result = try runScripted(replyTimeoutMilliseconds: 100, frontend: { (f) throws(VirtioError) in
            try f.setProtocolFeatures([.replyAck])
            try f.setStatus([.acknowledge, .driver, .featuresOK])
        }, backend: { channel in
            try channel.expect(.setProtocolFeatures([.replyAck]))
            try channel.expect(.setStatus(0x0B), needReply: true)
            channel.expectFrontendDone()  // no ack: the front-end gives up on its own
        })
        assertFailure(result, .connection)
    }

    func testWithoutReplyAckNothingAsksForAnAck() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in
            try f.setProtocolFeatures([.multiqueue, .status])
            try f.setOwner()
            return f.protocolFeatures
        }, backend: { channel in
            try channel.expect(.setProtocolFeatures([.multiqueue, .status]), needReply: false)
            try channel.expect(.setOwner, needReply: false)
            channel.expectFrontendDone()
        })
        XCTAssertEqual(try result.get(), [.multiqueue, .status])
    }
}
