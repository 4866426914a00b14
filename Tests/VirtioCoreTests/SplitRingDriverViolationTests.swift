import CVirtioShim
import VirtioCore
import XCTest

/// A hostile or broken driver, as the device half sees it: every index, head and link read from
/// shared memory is checked before it is used.
final class SplitRingDriverViolationTests: XCTestCase {
    private let capacity = 64

    private func readChain(_ ring: RingFixture, head: UInt16, capacity: Int? = nil) -> [ChainSegment]? {
        let capacity = capacity ?? self.capacity
        let buffer = UnsafeMutablePointer<ChainSegment>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        guard let count = ring.device.readChain(head: head, into: buffer, capacity: capacity) else { return nil }
        return Array(UnsafeBufferPointer(start: buffer, count: count))
    }

    func testAvailableIndexJumpingPastTheSizeIsRefused() {
        let ring = RingFixture(size: 16, startIndex: 65530)
        ring.availIndex = 65530 &+ 16
        XCTAssertEqual(ring.device.availableCount(), 16, "a full ring is legal")
        XCTAssertNil(ring.device.violation)
        ring.availIndex = 65530 &+ 17
        XCTAssertEqual(ring.device.availableCount(), 0)
        XCTAssertNotNil(ring.device.violation)
        ring.availIndex = 65530 &+ 1
        XCTAssertEqual(ring.device.availableCount(), 0, "a broken ring stays broken")
    }

    func testAvailableIndexMovingBackwardsIsRefused() {
        let ring = RingFixture(size: 16, startIndex: 5)
        ring.availIndex = 4
        XCTAssertEqual(ring.device.availableCount(), 0)
        XCTAssertNotNil(ring.device.violation)
    }

    func testHeadOutsideTheTableIsRefusedByPeek() {
        let ring = RingFixture(size: 16)
        ring.setAvailEntry(at: 0, head: 16)
        ring.availIndex = 1
        XCTAssertEqual(ring.device.availableCount(), 1)
        XCTAssertNil(ring.device.peekAvailable())
        XCTAssertNotNil(ring.device.violation)
        XCTAssertEqual(ring.device.availableCount(), 0)
    }

    func testHeadOutsideTheTableIsRefusedByTake() {
        for head: UInt16 in [16, 17, 0x8000, 0xFFFF] {
            let ring = RingFixture(size: 16)
            ring.setAvailEntry(at: 0, head: head)
            ring.availIndex = 1
            XCTAssertEqual(ring.device.availableCount(), 1)
            XCTAssertNil(ring.device.takeAvailable(), "head \(head)")
            XCTAssertNotNil(ring.device.violation, "head \(head)")
            XCTAssertEqual(ring.device.availIndex, 0, "a refused head is not consumed")
        }
    }

    func testPeekThenSkipConsumesOneHead() {
        let ring = RingFixture(size: 4)
        XCTAssertTrue(ring.driver.add(address: 0x10, length: 1, deviceWritable: false, cookie: 1))
        XCTAssertTrue(ring.driver.add(address: 0x20, length: 1, deviceWritable: false, cookie: 2))
        _ = ring.driver.publish()
        let peeked = ring.device.peekAvailable()
        XCTAssertNotNil(peeked)
        XCTAssertEqual(ring.device.peekAvailable(), peeked, "peeking twice sees the same head")
        ring.device.skipAvailable()
        XCTAssertEqual(ring.device.availableCount(), 1)
        XCTAssertNotEqual(ring.device.takeAvailable(), peeked)
        XCTAssertEqual(ring.device.availableCount(), 0)
    }

    func testValidThreeDescriptorChain() {
        let ring = RingFixture(size: 8)
        let next = Int32(CVS_VRING_DESC_F_NEXT), write = Int32(CVS_VRING_DESC_F_WRITE)
        ring.setDescriptor(5, address: 0xAAAA_0000, length: 12, flags: next, next: 2)
        ring.setDescriptor(2, address: 0xBBBB_0000, length: 1500, flags: next, next: 7)
        ring.setDescriptor(7, address: 0xCCCC_0000, length: 2048, flags: write, next: 3)  // next ignored without NEXT
        ring.setAvailEntry(at: 0, head: 5)
        ring.availIndex = 1
        XCTAssertEqual(ring.device.availableCount(), 1)
        guard let head = ring.device.takeAvailable() else { return XCTFail(ring.device.violation.map { "\($0)" } ?? "no head") }
        XCTAssertEqual(head, 5)
        XCTAssertEqual(readChain(ring, head: head), [
            ChainSegment(address: 0xAAAA_0000, length: 12, deviceWritable: false),
            ChainSegment(address: 0xBBBB_0000, length: 1500, deviceWritable: false),
            ChainSegment(address: 0xCCCC_0000, length: 2048, deviceWritable: true),
        ])
        XCTAssertNil(ring.device.violation)
    }

    func testChainAsLongAsTheQueueIsAccepted() {
        let ring = RingFixture(size: 8)
        for i in 0..<8 {
            ring.setDescriptor(i, address: UInt64(i) << 12, length: UInt32(i + 1),
                               flags: i < 7 ? Int32(CVS_VRING_DESC_F_NEXT) : 0, next: UInt16(i + 1))
        }
        XCTAssertEqual(readChain(ring, head: 0)?.map(\.length), [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertNil(ring.device.violation)
    }

    func testLoopingChainIsRefused() {
        let ring = RingFixture(size: 8)
        let next = Int32(CVS_VRING_DESC_F_NEXT)
        ring.setDescriptor(0, address: 0x1000, length: 1, flags: next, next: 1)
        ring.setDescriptor(1, address: 0x2000, length: 1, flags: next, next: 0)
        XCTAssertNil(readChain(ring, head: 0))
        XCTAssertNotNil(ring.device.violation)
    }

    func testSelfLoopIsRefusedEvenWithAHugeCapacity() {
        let ring = RingFixture(size: 4)
        ring.setDescriptor(3, address: 0x1000, length: 1, flags: Int32(CVS_VRING_DESC_F_NEXT), next: 3)
        XCTAssertNil(readChain(ring, head: 3, capacity: 1000))
        XCTAssertNotNil(ring.device.violation)
    }

    func testLinkOutsideTheTableIsRefused() {
        for link: UInt16 in [8, 9, 0xFFFF] {
            let ring = RingFixture(size: 8)
            ring.setDescriptor(0, address: 0x1000, length: 1, flags: Int32(CVS_VRING_DESC_F_NEXT), next: link)
            XCTAssertNil(readChain(ring, head: 0), "next \(link)")
            XCTAssertNotNil(ring.device.violation, "next \(link)")
        }
    }

    func testIndirectDescriptorIsRefused() {
        let ring = RingFixture(size: 8)
        ring.setDescriptor(0, address: 0x1000, length: 32, flags: Int32(CVS_VRING_DESC_F_INDIRECT))
        XCTAssertNil(readChain(ring, head: 0))
        XCTAssertNotNil(ring.device.violation)
    }

    func testIndirectDescriptorInTheMiddleOfAChainIsRefused() {
        let ring = RingFixture(size: 8)
        ring.setDescriptor(0, address: 0x1000, length: 32, flags: Int32(CVS_VRING_DESC_F_NEXT), next: 1)
        ring.setDescriptor(1, address: 0x2000, length: 32, flags: Int32(CVS_VRING_DESC_F_INDIRECT))
        XCTAssertNil(readChain(ring, head: 0))
        XCTAssertNotNil(ring.device.violation)
    }

    func testChainLongerThanTheCallersCapacityIsRefused() {
        let ring = RingFixture(size: 8)
        let next = Int32(CVS_VRING_DESC_F_NEXT)
        ring.setDescriptor(0, address: 0x1000, length: 1, flags: next, next: 1)
        ring.setDescriptor(1, address: 0x2000, length: 1, flags: next, next: 2)
        ring.setDescriptor(2, address: 0x3000, length: 1, flags: 0)
        XCTAssertNil(readChain(ring, head: 0, capacity: 2))
        XCTAssertNotNil(ring.device.violation)
    }

    func testDriverObjectsAreUnaffectedByADeviceViolation() {
        // The violation belongs to the device half only.
        let ring = RingFixture(size: 8)
        ring.setDescriptor(0, address: 0x1000, length: 32, flags: Int32(CVS_VRING_DESC_F_INDIRECT))
        XCTAssertNil(readChain(ring, head: 0))
        XCTAssertNotNil(ring.device.violation)
        XCTAssertNil(ring.driver.violation)
    }
}
