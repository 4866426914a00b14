import CVirtioShim
import VirtioCore
import XCTest

/// VIRTIO_F_IN_ORDER on the driver half: descriptors handed out in ring order, a batch of
/// transmit buffers completed by one used entry, and out-of-order entries refused.
final class SplitRingInOrderTests: XCTestCase {
    private func inOrderRing(batches: Bool) -> RingFixture {
        let ring = RingFixture(size: 8)
        ring.driver.acceptsBatchedCompletions = batches
        ring.driver.setInOrder(true)
        return ring
    }

    private func complete(_ ring: RingFixture, id: UInt16, at slot: Int, usedIndex: UInt16) {
        cvs_used_ring(ring.memory.used)[slot] = cvs_vring_used_elem(id: UInt32(id), len: 0)
        cvs_store_release_u16(cvs_used_idx(ring.memory.used), usedIndex)
    }

    func testOneEntryCompletesABatchAndDescriptorsStayInRingOrder() {
        let ring = inOrderRing(batches: true)
        for cookie: UInt32 in 1...4 {
            XCTAssertTrue(ring.driver.add(address: UInt64(cookie) << 12, length: 64, deviceWritable: false, cookie: cookie))
        }
        _ = ring.driver.publish()
        XCTAssertEqual((0..<4).map { cvs_avail_ring(ring.memory.avail)[$0] }, [0, 1, 2, 3], "ring order")
        complete(ring, id: 3, at: 0, usedIndex: 1)  // one entry for all four
        var others: [UInt32] = []
        XCTAssertEqual(ring.driver.usedCount(), 1)
        let last = ring.driver.takeUsed { others.append($0) }
        XCTAssertEqual(last?.cookie, 4)
        XCTAssertEqual(others, [1, 2, 3])
        XCTAssertEqual(ring.driver.lastCompletedBuffers, 4)
        XCTAssertEqual(ring.driver.freeDescriptors, 8)
        XCTAssertNil(ring.driver.violation)
        // The next buffers continue in ring order: descriptors 4 and 5.
        XCTAssertTrue(ring.driver.add(address: 0x5000, length: 64, deviceWritable: false, cookie: 5))
        XCTAssertTrue(ring.driver.add(address: 0x6000, length: 64, deviceWritable: false, cookie: 6))
        XCTAssertEqual([cvs_avail_ring(ring.memory.avail)[4], cvs_avail_ring(ring.memory.avail)[5]], [4, 5])
    }

    func testABatchOnAReceiveRingIsAViolation() {
        let ring = inOrderRing(batches: false)
        for cookie: UInt32 in 1...2 {
            XCTAssertTrue(ring.driver.add(address: UInt64(cookie) << 12, length: 64, deviceWritable: true, cookie: cookie))
        }
        _ = ring.driver.publish()
        complete(ring, id: 1, at: 0, usedIndex: 1)
        XCTAssertNil(ring.driver.peekUsed())
        XCTAssertEqual(ring.driver.violation, .usedOutOfOrder(id: 1, perBuffer: true))
    }

    func testAnEntryForABufferNotYetMadeAvailableIsAViolation() {
        let ring = inOrderRing(batches: true)
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: false, cookie: 1))
        _ = ring.driver.publish()
        XCTAssertTrue(ring.driver.add(address: 0x2000, length: 64, deviceWritable: false, cookie: 2))  // not published
        complete(ring, id: 1, at: 0, usedIndex: 1)
        XCTAssertNil(ring.driver.takeUsed())
        XCTAssertNotNil(ring.driver.violation)
    }
}
