import CVirtioShim
import VirtioCore
import XCTest

/// A hostile or broken device, as the driver half sees it: the driver must never trust the
/// used ring beyond what it has in flight.
final class SplitRingDeviceViolationTests: XCTestCase {
    func testUsedIdNotInFlightIsRefused() {
        let ring = RingFixture(size: 8)
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: true, cookie: 41))
        XCTAssertTrue(ring.driver.publish())
        guard let (head, _) = takeSingle(ring.device) else { return }
        let stranger = (head + 1) % 8
        ring.device.putUsed(head: stranger, length: 64)
        _ = ring.device.publishUsed()

        XCTAssertEqual(ring.driver.usedCount(), 1)
        XCTAssertNil(ring.driver.takeUsed())
        XCTAssertEqual(ring.driver.violation, .usedIdNotInFlight(id: Int(stranger), slot: nil))
        XCTAssertEqual(ring.driver.usedCount(), 0, "a broken ring reports nothing more")
        XCTAssertEqual(ring.driver.inFlight, 1, "the buffer was not returned")
    }

    func testUsedIdOutsideTheTableIsRefused() {
        for id: UInt32 in [8, 0xFFFF, 0x1_0000, UInt32.max] {
            let ring = RingFixture(size: 8)
            XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: true, cookie: 1))
            _ = ring.driver.publish()
            ring.setUsedEntry(at: 0, id: id, length: 1)
            ring.usedIndex = 1
            XCTAssertEqual(ring.driver.usedCount(), 1)
            XCTAssertNil(ring.driver.takeUsed(), "id \(id)")
            XCTAssertNotNil(ring.driver.violation, "id \(id)")
            XCTAssertEqual(ring.driver.usedCount(), 0)
        }
    }

    func testSameBufferReturnedTwiceIsRefused() {
        let ring = RingFixture(size: 8)
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: true, cookie: 1))
        XCTAssertTrue(ring.driver.add(address: 0x2000, length: 64, deviceWritable: true, cookie: 2))
        _ = ring.driver.publish()
        guard let (head, _) = takeSingle(ring.device) else { return }
        ring.device.putUsed(head: head, length: 5)
        ring.device.putUsed(head: head, length: 6)
        _ = ring.device.publishUsed()

        XCTAssertEqual(ring.driver.usedCount(), 2)
        let first = ring.driver.takeUsed()
        XCTAssertEqual(first?.cookie, 1)
        XCTAssertEqual(first?.length, 5)
        XCTAssertNil(ring.driver.takeUsed(), "the second return names a buffer no longer in flight")
        XCTAssertNotNil(ring.driver.violation)
        XCTAssertEqual(ring.driver.usedCount(), 0)
    }

    func testUsedIndexRunningAheadOfInFlightIsRefused() {
        let ring = RingFixture(size: 8, startIndex: 65534)
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: true, cookie: 1))
        XCTAssertTrue(ring.driver.add(address: 0x2000, length: 64, deviceWritable: true, cookie: 2))
        _ = ring.driver.publish()
        ring.usedIndex = 65534 &+ 2
        XCTAssertEqual(ring.driver.usedCount(), 2, "exactly what is in flight is fine")
        XCTAssertNil(ring.driver.violation)
        ring.usedIndex = 65534 &+ 3
        XCTAssertEqual(ring.driver.usedCount(), 0)
        XCTAssertNotNil(ring.driver.violation)
        // The violation sticks even if the device puts the index back.
        ring.usedIndex = 65534 &+ 1
        XCTAssertEqual(ring.driver.usedCount(), 0)
    }

    func testUsedIndexMovingBackwardsIsRefused() {
        let ring = RingFixture(size: 8, startIndex: 100)
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: true, cookie: 1))
        _ = ring.driver.publish()
        ring.usedIndex = 99  // 65535 entries "ahead" in modular arithmetic
        XCTAssertEqual(ring.driver.usedCount(), 0)
        XCTAssertNotNil(ring.driver.violation)
    }
}
