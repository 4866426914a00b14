import CVirtioShim
import VirtioCore
import XCTest

/// Fill, drain and out-of-order completion for every valid queue size.
final class SplitRingSizesTests: XCTestCase {
    static let allSizes = (0...15).map { 1 << $0 }

    func testValidSizes() {
        for size in Self.allSizes {
            XCTAssertTrue(SplitRingMemory.isValidSize(size), "\(size)")
        }
        for size in [0, -1, 3, 6, 100, 32767, 32769, 65536] {
            XCTAssertFalse(SplitRingMemory.isValidSize(size), "\(size)")
        }
        XCTAssertEqual(SplitRingMemory.maximumSize, 32768)
    }

    func testLayoutKeepsPartsApartAndAligned() {
        for size in Self.allSizes {
            let base = UnsafeMutableRawPointer.allocate(byteCount: SplitRingMemory.bytesNeeded(size: size), alignment: 4096)
            defer { base.deallocate() }
            let memory = SplitRingMemory.place(at: base, size: size)
            let descriptors = UnsafeMutableRawPointer(memory.descriptors)
            XCTAssertEqual(descriptors, base)
            XCTAssertEqual(memory.avail - descriptors, size * 16, "size \(size)")
            let availEnd = memory.avail + cvs_vring_avail_bytes(UInt32(size))
            XCTAssertGreaterThanOrEqual(memory.used - availEnd, 0, "used ring overlaps avail ring, size \(size)")
            XCTAssertEqual(Int(bitPattern: memory.used) % 64, 0, "used ring not on its own cache line, size \(size)")
            let usedEnd = memory.used + cvs_vring_used_bytes(UInt32(size))
            XCTAssertLessThanOrEqual(usedEnd - base, SplitRingMemory.bytesNeeded(size: size), "size \(size)")
        }
    }

    func testEmptyRingHasNothingOnEitherSide() {
        for size in Self.allSizes {
            let ring = RingFixture(size: size)
            XCTAssertEqual(ring.driver.size, size)
            XCTAssertEqual(ring.device.size, size)
            XCTAssertEqual(ring.driver.usedCount(), 0, "size \(size)")
            XCTAssertEqual(ring.device.availableCount(), 0, "size \(size)")
            XCTAssertEqual(ring.driver.freeDescriptors, size)
            XCTAssertEqual(ring.driver.inFlight, 0)
            XCTAssertFalse(ring.driver.publish(), "publishing nothing must not ask for a kick")
            XCTAssertFalse(ring.device.publishUsed(), "publishing nothing must not ask for an interrupt")
            XCTAssertNil(ring.driver.violation)
            XCTAssertNil(ring.device.violation)
        }
    }

    func testFillDrainAndOutOfOrderCompletionForEverySize() {
        var rng = SplitMix64(seed: 0x5EED)
        for size in Self.allSizes {
            let ring = RingFixture(size: size)
            // Several rounds: after the first, the driver's free list is in a scrambled order.
            for round in 0..<3 {
                fillDrainComplete(ring, round: round, rng: &rng)
                if ring.driver.violation != nil || ring.device.violation != nil { break }
            }
        }
    }

    private func fillDrainComplete(_ ring: RingFixture, round: Int, rng: inout SplitMix64) {
        let size = ring.size
        let context = "size \(size) round \(round)"
        // Per cookie: the buffer's address, length and direction, and what the device will write.
        let cookieBase = UInt32(round * 100_000 + 7)
        func address(_ i: Int) -> UInt64 { 0x7F00_0000_0000 + UInt64(round) << 32 + UInt64(i) * 2048 }
        func length(_ i: Int) -> UInt32 { UInt32(64 + i % 1500) }
        func written(_ i: Int) -> UInt32 { UInt32((i * 7 + round) % 2048) }

        for i in 0..<size {
            XCTAssertTrue(ring.driver.add(address: address(i), length: length(i), deviceWritable: i % 2 == 1,
                                          cookie: cookieBase + UInt32(i)), "\(context): add #\(i)")
        }
        XCTAssertFalse(ring.driver.add(address: 1, length: 1, deviceWritable: false, cookie: 1), "\(context): add on a full ring")
        XCTAssertEqual(ring.driver.freeDescriptors, 0, context)
        XCTAssertEqual(ring.driver.inFlight, size, context)
        XCTAssertEqual(ring.device.availableCount(), 0, "\(context): nothing is visible before publish()")
        XCTAssertTrue(ring.driver.publish(), "\(context): notifications are on by default")
        XCTAssertEqual(ring.driver.usedCount(), 0, context)

        XCTAssertEqual(ring.device.availableCount(), size, context)
        // Head → index of the buffer it carries (found through the unique address).
        var taken: [(head: UInt16, index: Int)] = []
        var headsSeen = Set<UInt16>()
        for _ in 0..<size {
            guard let (head, segment) = takeSingle(ring.device) else { return }
            XCTAssertLessThan(Int(head), size, context)
            XCTAssertTrue(headsSeen.insert(head).inserted, "\(context): head \(head) made available twice")
            let offset = segment.address - address(0)
            let i = Int(offset / 2048)
            XCTAssertEqual(offset % 2048, 0, context)
            XCTAssertTrue((0..<size).contains(i), "\(context): unknown address")
            XCTAssertEqual(segment.length, length(i), context)
            XCTAssertEqual(segment.deviceWritable, i % 2 == 1, context)
            taken.append((head, i))
        }
        XCTAssertEqual(ring.device.availableCount(), 0, context)
        XCTAssertEqual(taken.map(\.index), Array(0..<size), "\(context): the device must see buffers in the order made available")

        // Complete in a different order than made available (reversed or shuffled).
        let order = round == 0 ? Array(taken.reversed()) : taken.shuffled(using: &rng)
        for entry in order {
            ring.device.putUsed(head: entry.head, length: written(entry.index))
        }
        XCTAssertEqual(ring.driver.usedCount(), 0, "\(context): nothing is visible before publishUsed()")
        XCTAssertTrue(ring.device.publishUsed(), "\(context): interrupts are on by default")

        XCTAssertEqual(ring.driver.usedCount(), size, context)
        var returned = Set<UInt32>()
        for k in 0..<size {
            guard let (cookie, bytes) = ring.driver.takeUsed() else {
                XCTFail("\(context): takeUsed #\(k) returned nil: \(ring.driver.violation.map { "\($0)" } ?? "")")
                return
            }
            XCTAssertTrue(returned.insert(cookie).inserted, "\(context): cookie \(cookie) returned twice")
            // Used entries come back in completion order.
            XCTAssertEqual(cookie, cookieBase + UInt32(order[k].index), context)
            XCTAssertEqual(bytes, written(Int(cookie - cookieBase)), context)
        }
        XCTAssertEqual(returned.count, size, context)
        XCTAssertEqual(ring.driver.usedCount(), 0, context)
        XCTAssertEqual(ring.driver.freeDescriptors, size, context)
        XCTAssertEqual(ring.driver.inFlight, 0, context)
        XCTAssertNil(ring.driver.violation, context)
        XCTAssertNil(ring.device.violation, context)
        XCTAssertEqual(ring.driver.availIndex, ring.device.availIndex, context)
    }
}
