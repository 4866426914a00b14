import VhostUser
import VirtioCore
import XCTest

/// decode refuses every payload, fd count and flag combination the protocol does not allow.
final class VhostUserMessageMalformedTests: XCTestCase {
    private func decode(_ request: VhostUserRequest, _ payload: [UInt8], fds: Int = 0,
                        flags: UInt32 = VhostUserHeader.version) throws(VirtioError) -> VhostUserMessage {
        let header = VhostUserHeader(request: request, flags: flags, size: UInt32(payload.count))
        return try VhostUserMessage.decode(header: header, payload: payload, descriptorCount: fds)
    }

    /// Fixed-size requests and the only payload size each accepts.
    private let fixedSizes: [(VhostUserRequest, Int)] = [
        (.getFeatures, 0), (.setOwner, 0), (.resetOwner, 0), (.getProtocolFeatures, 0),
        (.getQueueNum, 0), (.getStatus, 0), (.setFeatures, 8), (.setProtocolFeatures, 8),
        (.setStatus, 8), (.setVringNum, 8), (.setVringBase, 8), (.getVringBase, 8),
        (.setVringEnable, 8), (.setVringAddr, 40), (.setVringKick, 8), (.setVringCall, 8), (.setVringErr, 8),
    ]

    func testExactSizesAreAccepted() throws {
        for (request, size) in fixedSizes {
            // A zero u64 for kick/call/err means "index 0 with an fd": give it one.
            let fds = [.setVringKick, .setVringCall, .setVringErr].contains(request) ? 1 : 0
            XCTAssertEqual(try decode(request, [UInt8](repeating: 0, count: size), fds: fds).request, request)
        }
    }

    func testShortPayloadsAreRefused() {
        for (request, size) in fixedSizes where size > 0 {
            for short in Set([0, 1, size / 2, size - 1]) {
                assertThrowsVirtioError(.peerProtocol, "\(request) with \(short) bytes") { () throws(VirtioError) in
                    try decode(request, [UInt8](repeating: 0, count: short), fds: 1)
                }
            }
        }
    }

    func testOversizedPayloadsAreRefused() {
        for (request, size) in fixedSizes {
            for long in [size + 1, size + 8, 4096] {
                assertThrowsVirtioError(.peerProtocol, "\(request) with \(long) bytes") { () throws(VirtioError) in
                    try decode(request, [UInt8](repeating: 0, count: long), fds: 1)
                }
            }
        }
    }

    func testMemTableShorterThanItsCountField() {
        for size in [0, 4, 7] {
            assertThrowsVirtioError(.peerProtocol, "\(size) bytes") { () throws(VirtioError) in
                try decode(.setMemTable, [UInt8](repeating: 1, count: size), fds: 1)
            }
        }
    }

    func testMemTableRegionCountOutOfRange() {
        for count: UInt32 in [0, 9, 255, UInt32.max] {
            let payload = littleEndianBytes(count) + littleEndianBytes(UInt32(0)) + [UInt8](repeating: 0, count: 8 * 32)
            assertThrowsVirtioError(.peerProtocol, "count \(count)") { () throws(VirtioError) in
                try decode(.setMemTable, payload, fds: Int(min(count, 8)))
            }
            // Also with only the count field present.
            let bare = littleEndianBytes(count) + littleEndianBytes(UInt32(0))
            assertThrowsVirtioError(.peerProtocol, "count \(count), bare") { () throws(VirtioError) in
                try decode(.setMemTable, bare, fds: 0)
            }
        }
    }

    func testMemTablePayloadThatIsNeitherExactNorFull() {
        let one = VhostUserMessage.setMemTable(MessageSamples.regions(1)).encodePayload()
        for payload in [one + [0], one + [UInt8](repeating: 0, count: 32), Array(one.dropLast()),
                        one + [UInt8](repeating: 0, count: 7 * 32 + 1)] {
            assertThrowsVirtioError(.peerProtocol, "\(payload.count) bytes") { () throws(VirtioError) in
                try decode(.setMemTable, payload, fds: 1)
            }
        }
        let eight = VhostUserMessage.setMemTable(MessageSamples.regions(8)).encodePayload()
        assertThrowsVirtioError(.peerProtocol) { () throws(VirtioError) in
            try decode(.setMemTable, eight + [UInt8](repeating: 0, count: 32), fds: 8)
        }
    }

    func testWrongDescriptorCounts() {
        let memTable = VhostUserMessage.setMemTable(MessageSamples.regions(1)).encodePayload()
        assertThrowsVirtioError(.peerProtocol, "SET_MEM_TABLE, 1 region, no fd") { () throws(VirtioError) in
            try decode(.setMemTable, memTable, fds: 0)
        }
        assertThrowsVirtioError(.peerProtocol, "SET_MEM_TABLE, 1 region, 2 fds") { () throws(VirtioError) in
            try decode(.setMemTable, memTable, fds: 2)
        }
        let three = VhostUserMessage.setMemTable(MessageSamples.regions(3)).encodePayload()
        assertThrowsVirtioError(.peerProtocol, "SET_MEM_TABLE, 3 regions, 8 fds") { () throws(VirtioError) in
            try decode(.setMemTable, three, fds: 8)
        }
        assertThrowsVirtioError(.peerProtocol, "SET_FEATURES with an fd") { () throws(VirtioError) in
            try decode(.setFeatures, littleEndianBytes(UInt64(1) << 32), fds: 1)
        }
        assertThrowsVirtioError(.peerProtocol, "GET_FEATURES with an fd") { () throws(VirtioError) in
            try decode(.getFeatures, [], fds: 1)
        }
        for request in [VhostUserRequest.setVringKick, .setVringCall, .setVringErr] {
            assertThrowsVirtioError(.peerProtocol, "\(request) announcing an fd without one") { () throws(VirtioError) in
                try decode(request, littleEndianBytes(UInt64(1)), fds: 0)
            }
            assertThrowsVirtioError(.peerProtocol, "\(request) with the no-fd flag and an fd") { () throws(VirtioError) in
                try decode(request, littleEndianBytes(UInt64(0x101)), fds: 1)
            }
            assertThrowsVirtioError(.peerProtocol, "\(request) with two fds") { () throws(VirtioError) in
                try decode(request, littleEndianBytes(UInt64(1)), fds: 2)
            }
        }
    }

    func testStatusMustFitEightBits() {
        for value: UInt64 in [0x100, 0x1FF, UInt64(1) << 63, UInt64.max] {
            assertThrowsVirtioError(.peerProtocol, "status 0x\(String(value, radix: 16))") { () throws(VirtioError) in
                try decode(.setStatus, littleEndianBytes(value))
            }
        }
    }

    func testVringFileWithStrayBits() {
        for value: UInt64 in [0x200, 0x400, 0x1_0000_0000, UInt64(1) << 63, 0x301] {
            for request in [VhostUserRequest.setVringKick, .setVringCall, .setVringErr] {
                for fds in [0, 1] {
                    assertThrowsVirtioError(.peerProtocol, "\(request) 0x\(String(value, radix: 16))") { () throws(VirtioError) in
                        try decode(request, littleEndianBytes(value), fds: fds)
                    }
                }
            }
        }
    }

    func testVringFileDecodesIndexAndFlag() throws {
        XCTAssertEqual(try decode(.setVringCall, littleEndianBytes(UInt64(0x1FF))),
                       .setVringCall(VringFile(index: 255, hasDescriptor: false)))
        XCTAssertEqual(try decode(.setVringKick, littleEndianBytes(UInt64(0x05)), fds: 1),
                       .setVringKick(VringFile(index: 5, hasDescriptor: true)))
    }

    func testReplyFlagOnARequestIsRefused() {
        for (message, _) in MessageSamples.all {
            assertThrowsVirtioError(.peerProtocol, "\(message.request) with the reply flag") { () throws(VirtioError) in
                try decode(message.request, message.encodePayload(), fds: message.descriptorCount,
                           flags: VhostUserHeader.version | VhostUserHeader.replyFlag)
            }
        }
    }

    func testUnknownRequestsAreUnsupported() {
        // Unknown codes, and known ones this package does not implement.
        let requests: [VhostUserRequest] = [
            VhostUserRequest(rawValue: 0), VhostUserRequest(rawValue: 23), VhostUserRequest(rawValue: 99),
            VhostUserRequest(rawValue: UInt32.max), .setLogBase, .setLogFD, .sendRARP,
            .setBackendRequestFD, .iotlbMessage, .setConfig, .getInflightFD, .setInflightFD,
            .getMaxMemSlots, .addMemReg, .remMemReg,
        ]
        for request in requests {
            for payload in [[UInt8](), [UInt8](repeating: 0, count: 8)] {
                assertThrowsVirtioError(.peerProtocol, "\(request)") { () throws(VirtioError) in
                    try decode(request, payload)
                }
            }
        }
    }
}
