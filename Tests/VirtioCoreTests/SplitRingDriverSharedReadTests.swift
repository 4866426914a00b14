import CVirtioShim
@testable import VirtioCore
import XCTest

/// A device (a back-end) that rewrites a used entry after the driver checked it: the driver
/// takes what it checked, read once, never a second read of shared memory.
final class SplitRingDriverSharedReadTests: XCTestCase {
    /// Two receive buffers in flight; returns their descriptor ids, in the order posted.
    private func postTwo(_ ring: RingFixture) -> (UInt32, UInt32) {
        XCTAssertTrue(ring.driver.add(address: 0x1000, length: 2048, deviceWritable: true, cookie: 100))
        XCTAssertTrue(ring.driver.add(address: 0x2000, length: 2048, deviceWritable: true, cookie: 101))
        _ = ring.driver.publish()
        let avail = cvs_avail_ring(ring.memory.avail)!
        return (UInt32(avail[0]), UInt32(avail[1]))
    }

    /// Posts two buffers, has the device return the first (64 bytes) and the driver peek at
    /// it; returns both ids.
    private func peekAtTheFirstOfTwo(_ ring: RingFixture) -> (UInt32, UInt32) {
        let (first, second) = postTwo(ring)
        ring.setUsedEntry(at: 0, id: first, length: 64)
        ring.usedIndex = 1
        XCTAssertEqual(ring.driver.usedCount(), 1)
        let peeked = ring.driver.peekUsed()
        XCTAssertEqual(peeked?.cookie, 100)
        XCTAssertEqual(peeked?.length, 64)
        return (first, second)
    }

    /// The old `skipPeekedUsed` read the id again: rewritten to the other buffer's, it freed
    /// that one (still in the device's hands) and left the peeked one in flight for ever.
    func testAnIdRewrittenBetweenPeekAndSkipFreesTheBufferPeeked() {
        let ring = RingFixture(size: 16)
        let (_, second) = peekAtTheFirstOfTwo(ring)
        ring.setUsedEntry(at: 0, id: second, length: 64)  // the device rewrites it
        ring.driver.skipPeekedUsed()
        XCTAssertEqual(ring.driver.inFlight, 1)
        ring.setUsedEntry(at: 1, id: second, length: 80)
        ring.usedIndex = 2
        XCTAssertEqual(ring.driver.usedCount(), 1)
        let taken = ring.driver.takeUsed()
        XCTAssertEqual(taken?.cookie, 101, "the second buffer comes back when the device returns it")
        XCTAssertEqual(taken?.length, 80)
        XCTAssertNil(ring.driver.violation)
        XCTAssertEqual(ring.driver.inFlight, 0)
    }

    /// An id rewritten out of range after the check: the old driver freed descriptor 65,535 of
    /// a 16-entry table (a write outside its arrays).
    func testAnIdRewrittenOutOfRangeIsNeverUsed() {
        let ring = RingFixture(size: 16)
        _ = peekAtTheFirstOfTwo(ring)
        // The old driver would now have read 0xFFFF back; here it must not look again.
        ring.setUsedEntry(at: 0, id: 0xFFFF, length: 64)
        ring.driver.skipPeekedUsed()
        XCTAssertEqual(ring.driver.inFlight, 1)
        XCTAssertNil(ring.driver.violation)
    }

    /// Receive with mergeable buffers peeks an entry (to read num_buffers) and then takes it:
    /// the id and the length are the ones peeked.
    func testAnIdAndLengthRewrittenBetweenPeekAndTakeAreThePeekedOnes() {
        let ring = RingFixture(size: 16)
        let (_, second) = peekAtTheFirstOfTwo(ring)
        ring.setUsedEntry(at: 0, id: second, length: 60_000)
        let taken = ring.driver.takeUsed()
        XCTAssertEqual(taken?.cookie, 100)
        XCTAssertEqual(taken?.length, 64)
        XCTAssertEqual(ring.driver.inFlight, 1)
    }
}
