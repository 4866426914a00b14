import CVirtioShim
import VirtioCore
import XCTest

/// VIRTIO_RING_F_EVENT_IDX: kicks and interrupts follow `avail_event` and `used_event`.
final class SplitRingEventIndexTests: XCTestCase {
    func testNeedEventMatchesTheSpecAcrossTheWrap() {
        // Moving from old to new crosses event when event is in [old, new).
        XCTAssertTrue(RingEvent.needed(event: 5, new: 6, old: 5))
        XCTAssertFalse(RingEvent.needed(event: 6, new: 6, old: 5))
        XCTAssertTrue(RingEvent.needed(event: 0xFFFF, new: 2, old: 0xFFFE), "across the 16-bit wrap")
        XCTAssertFalse(RingEvent.needed(event: 3, new: 2, old: 0xFFFE))
        XCTAssertTrue(RingEvent.needed(event: 10, new: 20, old: 10))
        XCTAssertFalse(RingEvent.needed(event: 9, new: 20, old: 10), "passed before this batch")
    }

    private func ring() -> RingFixture {
        let ring = RingFixture(size: 16)
        ring.driver.usesEventIndex = true
        ring.device.usesEventIndex = true
        return ring
    }

    private func add(_ ring: RingFixture, _ cookie: UInt32) {
        XCTAssertTrue(ring.driver.add(address: UInt64(cookie) << 12, length: 64, deviceWritable: true, cookie: cookie))
    }

    func testDriverKicksOnlyWhenPassingTheDevicesAvailEvent() {
        let ring = ring()
        ring.device.setNotificationsEnabled(false)  // polling: avail_event far ahead
        add(ring, 1)
        XCTAssertFalse(ring.driver.publish(), "a polling device is not kicked")
        ring.device.setNotificationsEnabled(true)  // avail_event = its next entry (0)
        add(ring, 2)
        XCTAssertFalse(ring.driver.publish(), "index 0 was passed before: the device has buffer 1 to see")
        XCTAssertEqual(ring.device.availableCount(), 2)
        _ = takeSingle(ring.device)
        _ = takeSingle(ring.device)
        ring.device.setNotificationsEnabled(true)  // avail_event = 2
        add(ring, 3)
        XCTAssertTrue(ring.driver.publish(), "the device waits for entry 2: kick")
        add(ring, 4)
        XCTAssertFalse(ring.driver.publish(), "one kick per wait")
    }

    func testDeviceSignalsOnlyWhenPassingTheDriversUsedEvent() {
        let ring = ring()
        for cookie: UInt32 in 1...4 { add(ring, cookie) }
        _ = ring.driver.publish()
        ring.driver.setInterruptsEnabled(false)  // polling: used_event far ahead
        guard let a = takeSingle(ring.device) else { return }
        ring.device.putUsed(head: a.head, length: 1)
        XCTAssertFalse(ring.device.publishUsed(), "a polling driver gets no interrupt")
        XCTAssertEqual(ring.driver.usedCount(), 1)
        XCTAssertNotNil(ring.driver.takeUsed())
        ring.driver.setInterruptsEnabled(true)  // used_event = 1: wake me at the next one
        guard let b = takeSingle(ring.device), let c = takeSingle(ring.device) else { return }
        ring.device.putUsed(head: b.head, length: 1)
        XCTAssertTrue(ring.device.publishUsed(), "the driver waits for entry 1")
        ring.device.putUsed(head: c.head, length: 1)
        XCTAssertFalse(ring.device.publishUsed(), "one interrupt per wait")
    }
}
