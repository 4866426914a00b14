import VirtioCore
import XCTest

/// Feature bit values and their human-readable description.
final class VirtioFeaturesTests: XCTestCase {
    func testBitPositions() {
        XCTAssertEqual(VirtioFeatures.netMAC.rawValue, 1 << 5)
        XCTAssertEqual(VirtioFeatures.netMergeableRxBuffers.rawValue, 1 << 15)
        XCTAssertEqual(VirtioFeatures.netMultiqueue.rawValue, 1 << 22)
        XCTAssertEqual(VirtioFeatures.ringIndirectDescriptors.rawValue, 1 << 28)
        XCTAssertEqual(VirtioFeatures.ringEventIndex.rawValue, 1 << 29)
        XCTAssertEqual(VirtioFeatures.vhostUserProtocolFeatures.rawValue, 1 << 30)
        XCTAssertEqual(VirtioFeatures.version1.rawValue, 1 << 32)
        XCTAssertEqual(VirtioFeatures.ringPacked.rawValue, 1 << 34)
        XCTAssertEqual(VirtioFeatures.inOrder.rawValue, 1 << 35)
    }

    func testDescriptionNamesKnownBits() {
        let features: VirtioFeatures = [.version1, .netMAC, .netStatus]
        XCTAssertEqual(features.description, "0x100010020 (MAC|STATUS|VERSION_1)")
    }

    func testDescriptionListsUnknownBits() {
        let features = VirtioFeatures(rawValue: VirtioFeatures.netCsum.rawValue | 1 << 40 | 1 << 63)
        XCTAssertEqual(features.description, "0x8000010000000001 (CSUM|bit 40|bit 63)")
    }

    func testDescriptionOfNothing() {
        XCTAssertEqual(VirtioFeatures().description, "0x0 ()")
    }

    func testEveryNamedBitIsDescribedOnce() {
        let all: VirtioFeatures = [
            .netCsum, .netGuestCsum, .netMTU, .netMAC, .netMergeableRxBuffers, .netStatus,
            .netControlQueue, .netMultiqueue, .ringIndirectDescriptors, .ringEventIndex,
            .vhostUserProtocolFeatures, .version1, .accessPlatform, .ringPacked, .inOrder,
        ]
        XCTAssertEqual(all.rawValue.nonzeroBitCount, 15)
        let names = all.description.split(separator: "(")[1].dropLast().split(separator: "|")
        XCTAssertEqual(names.count, 15)
        XCTAssertFalse(names.contains(where: { $0.hasPrefix("bit ") }))
    }

    func testDeviceStatusBits() {
        XCTAssertEqual(VirtioDeviceStatus([.acknowledge, .driver, .featuresOK, .driverOK]).rawValue, 0x0F)
        XCTAssertEqual(VirtioDeviceStatus.needsReset.rawValue, 0x40)
        XCTAssertEqual(VirtioDeviceStatus.failed.rawValue, 0x80)
        XCTAssertEqual(VirtioNetHeader.size, 12)
    }
}
