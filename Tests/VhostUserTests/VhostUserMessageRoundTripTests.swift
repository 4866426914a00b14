import VhostUser
import VirtioCore
import XCTest

/// Every request survives encodePayload → header → decode unchanged.
final class VhostUserMessageRoundTripTests: XCTestCase {
    private func roundTrip(_ message: VhostUserMessage, flags: UInt32 = VhostUserHeader.version) throws(VirtioError) -> VhostUserMessage {
        let payload = message.encodePayload()
        var bytes: [UInt8] = []
        VhostUserHeader(request: message.request, flags: flags, size: UInt32(payload.count)).encode(into: &bytes)
        let header = try VhostUserHeader.decode(bytes[...])
        return try VhostUserMessage.decode(header: header, payload: payload, descriptorCount: message.descriptorCount)
    }

    func testEveryMessageRoundTrips() throws {
        for (message, size) in MessageSamples.all {
            XCTAssertEqual(message.encodePayload().count, size, "\(message)")
            XCTAssertEqual(try roundTrip(message), message)
            // The need-reply flag does not change what a request means.
            XCTAssertEqual(try roundTrip(message, flags: VhostUserHeader.version | VhostUserHeader.needReplyFlag), message)
        }
    }

    func testEveryCaseIsCovered() {
        let requests = Set(MessageSamples.all.map { $0.message.request.rawValue })
        XCTAssertEqual(requests, [1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 39, 40])
    }

    func testDescriptorCounts() {
        XCTAssertEqual(VhostUserMessage.setMemTable(MessageSamples.regions(1)).descriptorCount, 1)
        XCTAssertEqual(VhostUserMessage.setMemTable(MessageSamples.regions(8)).descriptorCount, 8)
        XCTAssertEqual(VhostUserMessage.setVringKick(VringFile(index: 0, hasDescriptor: true)).descriptorCount, 1)
        XCTAssertEqual(VhostUserMessage.setVringCall(VringFile(index: 0, hasDescriptor: false)).descriptorCount, 0)
        XCTAssertEqual(VhostUserMessage.setVringErr(VringFile(index: 0, hasDescriptor: true)).descriptorCount, 1)
        XCTAssertEqual(VhostUserMessage.setFeatures([]).descriptorCount, 0)
        XCTAssertEqual(VhostUserMessage.getVringBase(VringState(index: 0, num: 0)).descriptorCount, 0)
    }

    func testRequestsWithAReplyOfTheirOwn() {
        let withReply = MessageSamples.all.filter { $0.message.hasReply }.map { $0.message.request }
        XCTAssertEqual(Set(withReply), [.getFeatures, .getProtocolFeatures, .getVringBase, .getQueueNum, .getStatus])
    }

    func testMemTableWireForm() {
        let region = MemoryRegionDescriptor(guestPhysicalAddress: 0x0102_0304_0506_0708, size: 0x1000,
                                            userAddress: 0xAABB, mmapOffset: 0x10)
        let payload = VhostUserMessage.setMemTable([region]).encodePayload()
        XCTAssertEqual(Array(payload[0..<8]), [1, 0, 0, 0, 0, 0, 0, 0], "count, then 4 bytes of padding")
        XCTAssertEqual(Array(payload[8..<16]), [8, 7, 6, 5, 4, 3, 2, 1])
        XCTAssertEqual(Array(payload[16..<24]), littleEndianBytes(UInt64(0x1000)))
        XCTAssertEqual(Array(payload[24..<32]), littleEndianBytes(UInt64(0xAABB)))
        XCTAssertEqual(Array(payload[32..<40]), littleEndianBytes(UInt64(0x10)))
    }

    func testVringAddrWireOrderIsDescUsedAvailLog() {
        let payload = VhostUserMessage.setVringAddr(MessageSamples.address).encodePayload()
        let a = MessageSamples.address
        XCTAssertEqual(payload, littleEndianBytes(a.index) + littleEndianBytes(a.flags)
            + littleEndianBytes(a.descriptorTable) + littleEndianBytes(a.usedRing)
            + littleEndianBytes(a.availableRing) + littleEndianBytes(a.log))
    }

    func testVringFileWireForm() {
        XCTAssertEqual(VhostUserMessage.setVringKick(VringFile(index: 3, hasDescriptor: true)).encodePayload(),
                       littleEndianBytes(UInt64(3)))
        XCTAssertEqual(VhostUserMessage.setVringCall(VringFile(index: 3, hasDescriptor: false)).encodePayload(),
                       littleEndianBytes(UInt64(0x103)))
    }

    func testFullFixedSizeMemTableArray() throws {
        // Some front-ends always send all 8 slots; only `count` of them are meaningful.
        for count in 1...8 {
            let regions = MessageSamples.regions(count)
            var payload = VhostUserMessage.setMemTable(regions).encodePayload()
            payload += [UInt8](repeating: 0xEE, count: (8 - count) * 32)
            XCTAssertEqual(payload.count, 8 + 8 * 32)
            let header = VhostUserHeader(request: .setMemTable, flags: 1, size: UInt32(payload.count))
            let decoded = try VhostUserMessage.decode(header: header, payload: payload, descriptorCount: count)
            XCTAssertEqual(decoded, .setMemTable(regions), "count \(count)")
        }
    }

    func testStatusAndFeatureValuesSurviveEveryBit() throws {
        for status in [UInt8(0), 1, 0x0F, 0x40, 0x80, 0xFF] {
            XCTAssertEqual(try roundTrip(.setStatus(status)), .setStatus(status))
        }
        for bit in 0..<64 {
            let features = VirtioFeatures(rawValue: 1 << UInt64(bit))
            XCTAssertEqual(try roundTrip(.setFeatures(features)), .setFeatures(features))
            let protocolFeatures = VhostUserProtocolFeatures(rawValue: 1 << UInt64(bit))
            XCTAssertEqual(try roundTrip(.setProtocolFeatures(protocolFeatures)), .setProtocolFeatures(protocolFeatures))
        }
    }
}
