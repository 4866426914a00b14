import CVirtioShim
import VirtioCore
import XCTest

/// Tearing a ring down without losing buffers, and starting it again.
final class SplitRingReclaimTests: XCTestCase {
    func testReclaimAllReturnsEveryInFlightCookieOnce() {
        let ring = RingFixture(size: 32)
        for cookie in UInt32(100)..<UInt32(120) {
            XCTAssertTrue(ring.driver.add(address: UInt64(cookie) << 12, length: 64, deviceWritable: true, cookie: cookie))
        }
        _ = ring.driver.publish()
        // The device completes five of them; the driver collects those normally.
        for _ in 0..<5 {
            guard let (head, _) = takeSingle(ring.device) else { return }
            ring.device.putUsed(head: head, length: 1)
        }
        _ = ring.device.publishUsed()
        var collected: [UInt32] = []
        for _ in 0..<ring.driver.usedCount() {
            if let (cookie, _) = ring.driver.takeUsed() { collected.append(cookie) }
        }
        XCTAssertEqual(collected, Array(100..<105))
        XCTAssertEqual(ring.driver.inFlight, 15)

        var reclaimed: [UInt32] = []
        ring.driver.reclaimAll { reclaimed.append($0) }
        XCTAssertEqual(reclaimed.sorted(), Array(105..<120))
        XCTAssertEqual(ring.driver.freeDescriptors, 32)
        XCTAssertEqual(ring.driver.inFlight, 0)

        var again = 0
        ring.driver.reclaimAll { _ in again += 1 }
        XCTAssertEqual(again, 0, "nothing is in flight any more")
    }

    func testReclaimAllOnAFullRingAndOnAnEmptyOne() {
        for size in [1, 2, 256] {
            let ring = RingFixture(size: size)
            var count = 0
            ring.driver.reclaimAll { _ in count += 1 }
            XCTAssertEqual(count, 0)
            for i in 0..<size {
                XCTAssertTrue(ring.driver.add(address: 0, length: 0, deviceWritable: false, cookie: UInt32(i)))
            }
            var reclaimed = Set<UInt32>()
            ring.driver.reclaimAll { XCTAssertTrue(reclaimed.insert($0).inserted, "cookie \($0) twice") }
            XCTAssertEqual(reclaimed, Set((0..<size).map(UInt32.init)))
            XCTAssertEqual(ring.driver.freeDescriptors, size)
            // Every descriptor is usable again.
            for i in 0..<size {
                XCTAssertTrue(ring.driver.add(address: 0, length: 0, deviceWritable: false, cookie: UInt32(i)))
            }
            XCTAssertFalse(ring.driver.add(address: 0, length: 0, deviceWritable: false, cookie: 0))
        }
    }

    func testResetClearsTheRingAndAViolation() {
        let ring = RingFixture(size: 8)
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: true, cookie: 1))
        _ = ring.driver.publish()
        ring.driver.setInterruptsEnabled(false)
        ring.usedIndex = 5  // more than in flight
        XCTAssertEqual(ring.driver.usedCount(), 0)
        XCTAssertNotNil(ring.driver.violation)

        var reclaimed: [UInt32] = []
        ring.driver.reclaimAll { reclaimed.append($0) }
        XCTAssertEqual(reclaimed, [1])
        ring.driver.reset(startIndex: 1234)
        XCTAssertNil(ring.driver.violation)
        XCTAssertEqual(ring.driver.startIndex, 1234)
        XCTAssertEqual(ring.driver.availIndex, 1234)
        XCTAssertEqual(ring.availIndex, 1234)
        XCTAssertEqual(ring.usedIndex, 1234)
        XCTAssertEqual(cvs_avail_flags(ring.memory.avail).pointee, 0, "reset re-enables interrupts")
        XCTAssertEqual(ring.driver.freeDescriptors, 8)
        XCTAssertEqual(ring.driver.usedCount(), 0)
        for i in 0..<8 {
            let d = ring.memory.descriptors[i]
            XCTAssertEqual(d.addr, 0)
            XCTAssertEqual(d.len, 0)
            XCTAssertEqual(d.flags, 0)
        }

        // A fresh device at the new base works with the reset driver.
        let device = SplitRingDevice(memory: ring.memory, baseIndex: 1234)
        XCTAssertEqual(device.availableCount(), 0)
        XCTAssertTrue(ring.driver.add(address: 0x3000, length: 10, deviceWritable: false, cookie: 77))
        XCTAssertTrue(ring.driver.publish())
        guard let (head, segment) = takeSingle(device) else { return }
        XCTAssertEqual(segment.address, 0x3000)
        device.putUsed(head: head, length: 3)
        XCTAssertTrue(device.publishUsed())
        let back = ring.driver.takeUsed()
        XCTAssertEqual(back?.cookie, 77)
        XCTAssertEqual(back?.length, 3)
    }

    func testResetDefaultsToIndexZero() {
        let ring = RingFixture(size: 4, startIndex: 9)
        ring.driver.reset()
        XCTAssertEqual(ring.driver.startIndex, 0)
        XCTAssertEqual(ring.availIndex, 0)
        XCTAssertEqual(ring.usedIndex, 0)
    }
}
