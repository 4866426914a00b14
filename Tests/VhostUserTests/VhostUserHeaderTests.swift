import VhostUser
import VirtioCore
import XCTest

/// The 12-byte message header: wire form, version and size checks, flag accessors.
final class VhostUserHeaderTests: XCTestCase {
    func testWireForm() {
        var bytes: [UInt8] = [0xFF]
        VhostUserHeader(request: .setVringAddr, flags: VhostUserHeader.version | VhostUserHeader.needReplyFlag, size: 40)
            .encode(into: &bytes)
        XCTAssertEqual(bytes, [0xFF, 9, 0, 0, 0, 0x09, 0, 0, 0, 40, 0, 0, 0], "encode appends little-endian u32s")
        XCTAssertEqual(VhostUserHeader.byteCount, 12)
    }

    func testRoundTrip() throws {
        for flags in [VhostUserHeader.version, VhostUserHeader.version | VhostUserHeader.replyFlag,
                      VhostUserHeader.version | VhostUserHeader.needReplyFlag] {
            let header = VhostUserHeader(request: .getVringBase, flags: flags, size: 8)
            var bytes: [UInt8] = []
            header.encode(into: &bytes)
            XCTAssertEqual(try VhostUserHeader.decode(bytes[...]), header)
        }
    }

    func testDecodeWorksOnASliceWithAnOffset() throws {
        let bytes: [UInt8] = [0xAA, 0xBB] + rawHeader(request: 2, flags: 1, size: 8)
        let header = try VhostUserHeader.decode(bytes[2...])
        XCTAssertEqual(header, VhostUserHeader(request: .setFeatures, flags: 1, size: 8))
    }

    func testFlagAccessors() {
        let reply = VhostUserHeader(request: .getFeatures, flags: 0x5, size: 8)
        XCTAssertTrue(reply.isReply)
        XCTAssertFalse(reply.needsReply)
        let ask = VhostUserHeader(request: .setOwner, flags: 0x9, size: 0)
        XCTAssertFalse(ask.isReply)
        XCTAssertTrue(ask.needsReply)
    }

    func testOtherVersionsAreRefused() {
        for version: UInt32 in [0, 2, 3] {
            let bytes = rawHeader(request: 1, flags: version, size: 0)
            assertThrowsVirtioError(.peerProtocol, "version \(version)") { () throws(VirtioError) in
                try VhostUserHeader.decode(bytes[...])
            }
        }
    }

    func testPayloadSizeLimit() throws {
        XCTAssertEqual(VhostUserHeader.maximumPayload, 4096)
        let atLimit = rawHeader(request: 25, flags: 1, size: 4096)
        XCTAssertEqual(try VhostUserHeader.decode(atLimit[...]).size, 4096)
        for size: UInt32 in [4097, 65536, UInt32.max] {
            let bytes = rawHeader(request: 5, flags: 1, size: size)
            assertThrowsVirtioError(.peerProtocol, "size \(size)") { () throws(VirtioError) in
                try VhostUserHeader.decode(bytes[...])
            }
        }
    }

    func testWrongByteCountsAreRefused() {
        let full = rawHeader(request: 1, flags: 1, size: 0)
        for count in [0, 11] {
            assertThrowsVirtioError(.peerProtocol, "\(count) bytes") { () throws(VirtioError) in
                try VhostUserHeader.decode(full[0..<count])
            }
        }
        let long = full + [0]
        assertThrowsVirtioError(.peerProtocol) { () throws(VirtioError) in try VhostUserHeader.decode(long[...]) }
    }

    func testRequestNames() {
        XCTAssertEqual(VhostUserRequest.setMemTable.description, "SET_MEM_TABLE")
        XCTAssertEqual(VhostUserRequest.getStatus.description, "GET_STATUS")
        XCTAssertEqual(VhostUserRequest(rawValue: 9).description, "SET_VRING_ADDR")
        XCTAssertEqual(VhostUserRequest(rawValue: 99).description, "request 99")
        XCTAssertEqual(VhostUserRequest(rawValue: 39), .setStatus)
    }

    func testProtocolFeatureBits() {
        XCTAssertEqual(VhostUserProtocolFeatures.replyAck.rawValue, 8)
        XCTAssertEqual(VhostUserProtocolFeatures.status.rawValue, 1 << 16)
        XCTAssertEqual(VhostUserProtocolFeatures.implemented, [.multiqueue, .replyAck, .mtu, .config, .status])
        XCTAssertEqual(VhostUserProtocolFeatures.implemented.rawValue, 0x10219)
        XCTAssertEqual(VhostUserProtocolFeatures([.multiqueue, .replyAck]).description, "0x9")
    }
}
