import CVirtioShim
import VirtioCore
import XCTest

/// VRING_USED_F_NO_NOTIFY and VRING_AVAIL_F_NO_INTERRUPT as each side sees them.
final class SplitRingNotificationTests: XCTestCase {
    func testDeviceSuppressesKicks() {
        let ring = RingFixture(size: 16)
        ring.device.setNotificationsEnabled(false)
        XCTAssertEqual(cvs_used_flags(ring.memory.used).pointee, UInt16(CVS_VRING_USED_F_NO_NOTIFY))
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: false, cookie: 1))
        XCTAssertFalse(ring.driver.publish(), "the device asked for no kicks")
        XCTAssertEqual(ring.device.availableCount(), 1, "suppressing kicks must not hide buffers")

        ring.device.setNotificationsEnabled(true)
        XCTAssertEqual(cvs_used_flags(ring.memory.used).pointee, 0)
        XCTAssertTrue(ring.driver.add(address: 0x2000, length: 64, deviceWritable: false, cookie: 2))
        XCTAssertTrue(ring.driver.publish(), "the device asked for kicks again")
        XCTAssertEqual(ring.device.availableCount(), 2)
    }

    func testDriverSuppressesInterrupts() {
        let ring = RingFixture(size: 16)
        for cookie: UInt32 in 1...2 {
            XCTAssertTrue(ring.driver.add(address: UInt64(cookie) << 12, length: 64, deviceWritable: true, cookie: cookie))
        }
        XCTAssertTrue(ring.driver.publish())
        guard let first = takeSingle(ring.device), let second = takeSingle(ring.device) else { return }

        ring.driver.setInterruptsEnabled(false)
        XCTAssertEqual(cvs_avail_flags(ring.memory.avail).pointee, UInt16(CVS_VRING_AVAIL_F_NO_INTERRUPT))
        ring.device.putUsed(head: first.head, length: 10)
        XCTAssertFalse(ring.device.publishUsed(), "the driver asked for no interrupts")
        XCTAssertEqual(ring.driver.usedCount(), 1, "suppressing interrupts must not hide used buffers")

        ring.driver.setInterruptsEnabled(true)
        XCTAssertEqual(cvs_avail_flags(ring.memory.avail).pointee, 0)
        ring.device.putUsed(head: second.head, length: 20)
        XCTAssertTrue(ring.device.publishUsed(), "the driver asked for interrupts again")
        XCTAssertEqual(ring.driver.usedCount(), 2)
        XCTAssertEqual(ring.driver.takeUsed()?.cookie, 1)
        XCTAssertEqual(ring.driver.takeUsed()?.cookie, 2)
    }

    func testSuppressionFlagsDoNotDisturbTheIndices() {
        let ring = RingFixture(size: 4, startIndex: 65534)
        ring.device.setNotificationsEnabled(false)
        ring.driver.setInterruptsEnabled(false)
        for round in 0..<8 {
            XCTAssertTrue(ring.driver.add(address: 0x1000, length: 1, deviceWritable: true, cookie: UInt32(round)))
            XCTAssertFalse(ring.driver.publish())
            guard let (head, _) = takeSingle(ring.device) else { return }
            ring.device.putUsed(head: head, length: 0)
            XCTAssertFalse(ring.device.publishUsed())
            XCTAssertEqual(ring.driver.takeUsed()?.cookie, UInt32(round))
        }
        XCTAssertEqual(ring.availIndex, 65534 &+ 8)
        XCTAssertEqual(ring.usedIndex, 65534 &+ 8)
    }
}
