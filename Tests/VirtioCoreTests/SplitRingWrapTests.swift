import VirtioCore
import XCTest

/// The free-running 16-bit indices wrap from 65535 to 0 without losing or duplicating buffers.
final class SplitRingWrapTests: XCTestCase {
    func testStartIndexIsVisibleOnBothSides() {
        let ring = RingFixture(size: 8, startIndex: 65500)
        XCTAssertEqual(ring.driver.startIndex, 65500)
        XCTAssertEqual(ring.driver.availIndex, 65500)
        XCTAssertEqual(ring.device.availIndex, 65500)
        XCTAssertEqual(ring.availIndex, 65500)
        XCTAssertEqual(ring.usedIndex, 65500)
        XCTAssertEqual(ring.device.availableCount(), 0)
        XCTAssertEqual(ring.driver.usedCount(), 0)
    }

    func testSingleBufferCyclesAcrossSeveralWraps() {
        let ring = RingFixture(size: 256, startIndex: 65500)
        let cycles = 300_000
        var wraps = 0
        var lastAvail = ring.availIndex
        for n in 0..<cycles {
            let cookie = UInt32(n)
            guard ring.driver.add(address: UInt64(n) * 64, length: UInt32(n % 9000), deviceWritable: n & 1 == 0, cookie: cookie) else {
                return XCTFail("add failed at cycle \(n)")
            }
            _ = ring.driver.publish()
            if ring.availIndex < lastAvail { wraps += 1 }
            lastAvail = ring.availIndex
            guard ring.device.availableCount() == 1, let (head, segment) = takeSingle(ring.device) else {
                return XCTFail("cycle \(n): \(ring.device.violation.map { "\($0)" } ?? "nothing available")")
            }
            if segment.address != UInt64(n) * 64 || segment.length != UInt32(n % 9000) {
                return XCTFail("cycle \(n): wrong segment \(segment)")
            }
            ring.device.putUsed(head: head, length: UInt32(truncatingIfNeeded: n &* 31))
            _ = ring.device.publishUsed()
            guard ring.driver.usedCount() == 1, let (back, length) = ring.driver.takeUsed() else {
                return XCTFail("cycle \(n): \(ring.driver.violation.map { "\($0)" } ?? "nothing used")")
            }
            if back != cookie || length != UInt32(truncatingIfNeeded: n &* 31) {
                return XCTFail("cycle \(n): got cookie \(back) length \(length)")
            }
        }
        XCTAssertEqual(wraps, (65500 + cycles) / 65536, "the run must cross the 65535 → 0 boundary")
        XCTAssertEqual(ring.driver.availIndex, UInt16(truncatingIfNeeded: 65500 + cycles))
        XCTAssertEqual(ring.device.availIndex, ring.driver.availIndex)
        XCTAssertEqual(ring.usedIndex, ring.driver.availIndex)
        XCTAssertEqual(ring.driver.freeDescriptors, 256)
        XCTAssertNil(ring.driver.violation)
        XCTAssertNil(ring.device.violation)
    }

    func testBatchesWithOutOfOrderCompletionAcrossTheWrap() {
        for size in [1, 4, 64, 1024] {
            batches(size: size, buffers: 200_000)
        }
    }

    /// Moves `buffers` buffers through a ring in batches of varying size, with some buffers held
    /// by the device over several batches, completing them in scrambled order.
    private func batches(size: Int, buffers: Int) {
        let ring = RingFixture(size: size, startIndex: 65500)
        var rng = SplitMix64(seed: UInt64(size))
        var nextCookie: UInt32 = 0
        var outstanding: [UInt32: UInt32] = [:]  // cookie → length the device will write
        var held: [UInt16] = []                   // heads the device has taken, not yet returned
        var headCookie: [UInt16: UInt32] = [:]
        var completed = 0
        var passedWrap = false
        while completed < buffers {
            // Driver: add a random number of buffers (up to what is free).
            let add = Int.random(in: 0...ring.driver.freeDescriptors, using: &rng)
            for _ in 0..<add {
                let cookie = nextCookie
                nextCookie &+= 1
                guard ring.driver.add(address: UInt64(cookie) << 12, length: 1, deviceWritable: true, cookie: cookie) else {
                    return XCTFail("size \(size): add failed with \(ring.driver.freeDescriptors) free")
                }
                outstanding[cookie] = cookie &* 2654435761
            }
            _ = ring.driver.publish()
            // Device: take everything, return a random subset in random order.
            let available = ring.device.availableCount()
            guard available == add else {
                return XCTFail("size \(size): \(available) available after adding \(add): \(ring.device.violation.map { "\($0)" } ?? "")")
            }
            for _ in 0..<available {
                guard let (head, segment) = takeSingle(ring.device) else { return }
                headCookie[head] = UInt32(truncatingIfNeeded: segment.address >> 12)
                held.append(head)
            }
            held.shuffle(using: &rng)
            let giveBack = Int.random(in: 0...held.count, using: &rng)
            for head in held.suffix(giveBack) {
                let cookie = headCookie[head]!
                ring.device.putUsed(head: head, length: cookie &* 2654435761)
            }
            held.removeLast(giveBack)
            let before = ring.usedIndex
            _ = ring.device.publishUsed()
            if ring.usedIndex < before { passedWrap = true }
            // Driver: collect.
            let used = ring.driver.usedCount()
            guard used == giveBack else {
                return XCTFail("size \(size): \(used) used after returning \(giveBack): \(ring.driver.violation.map { "\($0)" } ?? "")")
            }
            for _ in 0..<used {
                guard let (cookie, length) = ring.driver.takeUsed() else {
                    return XCTFail("size \(size): \(ring.driver.violation.map { "\($0)" } ?? "takeUsed nil")")
                }
                guard let expected = outstanding.removeValue(forKey: cookie) else {
                    return XCTFail("size \(size): cookie \(cookie) returned twice or never made available")
                }
                XCTAssertEqual(length, expected)
                completed += 1
            }
            XCTAssertEqual(ring.driver.inFlight, outstanding.count, "size \(size)")
        }
        XCTAssertTrue(passedWrap, "size \(size): the used index never wrapped")
        XCTAssertNil(ring.driver.violation)
        XCTAssertNil(ring.device.violation)
    }
}
