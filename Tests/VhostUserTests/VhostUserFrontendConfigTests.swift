import VhostUser
import VirtioCore
import XCTest

/// GET_CONFIG and NET_SET_MTU on the wire, and the GET_CONFIG replies the front-end refuses.
final class VhostUserFrontendConfigTests: XCTestCase {
    private func getConfig(answeredWith answer: @escaping (VhostUserChannel) throws -> Void) throws -> Result<[UInt8], VirtioError> {
        try runScripted(frontend: { (f) throws(VirtioError) in
            try f.getConfig(offset: 0, size: 12)
        }, backend: { channel in
            let frame = try channel.expect(.getConfig(VhostUserConfigSpace(offset: 0, size: 12)))
            XCTAssertEqual(frame.payload.count, 24, "12-byte header and the 12-byte window")
            try answer(channel)
            channel.expectFrontendDone()
        })
    }

    private static func reply(offset: UInt32, size: UInt32, bytes: Int) -> [UInt8] {
        VhostUserConfigSpace(offset: offset, size: size, payload: [UInt8](repeating: 0xAB, count: bytes)).encoded
    }

    func testWellFormedConfigReplyIsAccepted() throws {
        let config = VirtioNetConfig(macAddress: MACAddress(2, 1, 2, 3, 4, 5), status: 1, maxQueuePairs: 4, mtu: 9000)
        let result = try getConfig(answeredWith: {
            try $0.reply(to: .getConfig, payload: VhostUserConfigSpace(offset: 0, size: 12, payload: config.bytes).encoded)
        })
        XCTAssertEqual(VirtioNetConfig(bytes: try result.get()), config)
    }

    func testConfigReplyForAnotherWindow() throws {
        assertFailure(try getConfig(answeredWith: { try $0.reply(to: .getConfig, payload: Self.reply(offset: 4, size: 12, bytes: 12)) }), .peerProtocol)
    }

    func testConfigReplyWithFewerBytesThanAsked() throws {
        assertFailure(try getConfig(answeredWith: { try $0.reply(to: .getConfig, payload: Self.reply(offset: 0, size: 8, bytes: 8)) }), .peerProtocol)
    }

    func testConfigReplyWhoseSizeFieldDisagreesWithItsBytes() throws {
        assertFailure(try getConfig(answeredWith: { try $0.reply(to: .getConfig, payload: Self.reply(offset: 0, size: 200, bytes: 12)) }), .peerProtocol)
    }

    func testConfigWindowLargerThanTheProtocolAllows() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in
            try f.getConfig(offset: 0, size: 300)
        }, backend: { channel in channel.expectFrontendDone() })
        assertFailure(result, .configuration)
    }

    func testMessagesRoundTrip() throws {
        for message: VhostUserMessage in [.netSetMTU(9000), .getConfig(VhostUserConfigSpace(offset: 6, size: 2))] {
            let payload = message.encodePayload()
            let header = VhostUserHeader(request: message.request, flags: VhostUserHeader.version, size: UInt32(payload.count))
            XCTAssertEqual(try VhostUserMessage.decode(header: header, payload: payload, descriptorCount: 0), message)
        }
    }
}
