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

    /// §2.7.8.1: one entry, at the batch's first position, names its last buffer, and the used
    /// index moves past the whole batch (it counts buffers).
    func testOneEntryCompletesABatchAndDescriptorsStayInRingOrder() {
        let ring = inOrderRing(batches: true)
        for cookie: UInt32 in 1...4 {
            XCTAssertTrue(ring.driver.add(address: UInt64(cookie) << 12, length: 64, deviceWritable: false, cookie: cookie))
        }
        _ = ring.driver.publish()
        XCTAssertEqual((0..<4).map { cvs_avail_ring(ring.memory.avail)[$0] }, [0, 1, 2, 3], "ring order")
        complete(ring, id: 3, at: 0, usedIndex: 4)  // one entry for all four
        var cookies: [UInt32] = []
        XCTAssertEqual(ring.driver.takeCompletions { cookies.append($0) }, 4)
        XCTAssertEqual(cookies, [1, 2, 3, 4])
        XCTAssertEqual(ring.driver.freeDescriptors, 8)
        XCTAssertEqual(ring.driver.usedCount(), 0)
        XCTAssertNil(ring.driver.violation)
        // The next buffers continue in ring order (descriptors 4 and 5), and the next batch's
        // entry is at its own first position, 4.
        XCTAssertTrue(ring.driver.add(address: 0x5000, length: 64, deviceWritable: false, cookie: 5))
        XCTAssertTrue(ring.driver.add(address: 0x6000, length: 64, deviceWritable: false, cookie: 6))
        _ = ring.driver.publish()
        XCTAssertEqual([cvs_avail_ring(ring.memory.avail)[4], cvs_avail_ring(ring.memory.avail)[5]], [4, 5])
        complete(ring, id: 5, at: 4, usedIndex: 6)
        cookies = []
        XCTAssertEqual(ring.driver.takeCompletions { cookies.append($0) }, 2)
        XCTAssertEqual(cookies, [5, 6])
        XCTAssertNil(ring.driver.violation)
    }

    /// Transmit completions in order are taken by the used index alone: entries the device
    /// never wrote (or wrote wrong) are not read, chains come back whole, and the index is still
    /// checked against what was published.
    func testTransmitCompletionsInOrderAreTakenByTheIndexAlone() {
        let ring = inOrderRing(batches: true)
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: false, cookie: 1))
        XCTAssertTrue(ring.driver.addChain(count: 2, deviceWritable: false) { (0x2000 + UInt64($0) << 12, 64, 2 + UInt32($0)) })
        XCTAssertTrue(ring.driver.add(address: 0x4000, length: 64, deviceWritable: false, cookie: 4))
        _ = ring.driver.publish()
        for slot in 0..<8 { cvs_used_ring(ring.memory.used)[slot] = cvs_vring_used_elem(id: 0xFFFF, len: 0xFFFF_FFFF) }
        cvs_store_release_u16(cvs_used_idx(ring.memory.used), 2)
        var cookies: [UInt32] = []
        XCTAssertEqual(ring.driver.takeCompletions { cookies.append($0) }, 2)
        XCTAssertEqual(cookies, [1, 2, 3], "the single buffer, then the chain's two parts")
        XCTAssertEqual(ring.driver.freeDescriptors, 7)
        XCTAssertNil(ring.driver.violation)
        // Past what was published: a violation, and nothing taken.
        cvs_store_release_u16(cvs_used_idx(ring.memory.used), 4)
        XCTAssertEqual(ring.driver.takeCompletions { cookies.append($0) }, 0)
        XCTAssertEqual(ring.driver.violation, .usedIndexJump(count: 2, outstanding: 1))
    }

    /// A ring torn down while the back-end is still finishing: buffers reclaimed (back with
    /// their owner) must not come back a second time when the old used index moves on.
    func testCompletionsAfterReclaimAllAreRefused() {
        let ring = inOrderRing(batches: true)
        for cookie: UInt32 in 1...4 {
            XCTAssertTrue(ring.driver.add(address: UInt64(cookie) << 12, length: 64, deviceWritable: false, cookie: cookie))
        }
        _ = ring.driver.publish()
        var reclaimed: [UInt32] = []
        ring.driver.reclaimAll { reclaimed.append($0) }
        XCTAssertEqual(reclaimed.sorted(), [1, 2, 3, 4])
        cvs_store_release_u16(cvs_used_idx(ring.memory.used), 4)
        var cookies: [UInt32] = []
        XCTAssertEqual(ring.driver.takeCompletions { cookies.append($0) }, 0)
        XCTAssertEqual(cookies, [], "nothing freed twice")
        XCTAssertEqual(ring.driver.freeDescriptors, 8)
        XCTAssertNil(ring.driver.violation, "late completions of what was published are ignored")
        // Past what was published is still a violation.
        cvs_store_release_u16(cvs_used_idx(ring.memory.used), 5)
        XCTAssertEqual(ring.driver.takeCompletions { cookies.append($0) }, 0)
        XCTAssertEqual(ring.driver.violation, .usedIndexJump(count: 1, outstanding: 0))
    }

    /// Without in-order, completions are read entry by entry and checked.
    func testTransmitCompletionsOutOfOrderAreReadAndChecked() {
        let ring = RingFixture(size: 8)
        ring.driver.acceptsBatchedCompletions = true
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 64, deviceWritable: false, cookie: 1))
        _ = ring.driver.publish()
        complete(ring, id: 0xFFFF, at: 0, usedIndex: 1)
        XCTAssertEqual(ring.driver.takeCompletions { _ in }, 0)
        XCTAssertEqual(ring.driver.violation, .usedIdNotInFlight(id: 0xFFFF, slot: nil))
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
