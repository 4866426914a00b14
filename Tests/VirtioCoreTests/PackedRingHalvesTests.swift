import CVirtioShim
import VirtioCore
import XCTest

/// One packed ring in private memory (poisoned first, so the driver's zeroing is checked too)
/// with both halves attached.
private final class PackedFixture {
    let memory: PackedRingMemory
    let driver: PackedRingDriver
    let device: PackedRingDevice
    private let base: UnsafeMutableRawPointer
    let segments = UnsafeMutablePointer<ChainSegment>.allocate(capacity: 64)

    init(size: Int) {
        let bytes = PackedRingMemory.bytesNeeded(size: size)
        base = .allocate(byteCount: bytes, alignment: 4096)
        base.initializeMemory(as: UInt8.self, repeating: 0xA5, count: bytes)
        memory = PackedRingMemory.place(at: base, size: size)
        driver = PackedRingDriver(memory: memory)
        device = PackedRingDevice(memory: memory)
    }

    deinit {
        base.deallocate()
        segments.deallocate()
    }

    /// Writes a used descriptor into `slot` as a (possibly hostile) device would.
    func writeUsed(slot: Int, id: UInt16, length: UInt32, wrap: Bool) {
        memory.descriptors[slot].id = id
        memory.descriptors[slot].len = length
        memory.descriptors[slot].flags = wrap ? UInt16(CVS_VIRTQ_DESC_F_AVAIL | CVS_VIRTQ_DESC_F_USED) : 0
    }
}

final class PackedRingHalvesTests: XCTestCase {
    /// Chains of 1…5 descriptors through a ring of 8 for 40 laps: both wrap counters flip
    /// many times, chains straddle the end, every cookie and length comes back.
    func testChainsRoundTripOverManyWraps() {
        let ring = PackedFixture(size: 8)
        var rng = SplitMix64(seed: 7)
        var nextCookie: UInt32 = 0
        var expected: [(first: UInt32, count: Int)] = []
        for _ in 0..<200 {
            // Driver: add chains while they fit.
            while true {
                let count = Int(rng.next() % 5) + 1
                guard ring.driver.freeDescriptors >= count else { break }
                let first = nextCookie
                XCTAssertTrue(ring.driver.addChain(count: count, deviceWritable: false) { i in
                    (UInt64(0x1000 + i), UInt32(100 + i), first + UInt32(i))
                })
                nextCookie += UInt32(count)
                expected.append((first, count))
            }
            _ = ring.driver.publish()
            // Device: take everything, return it with a length naming the chain.
            let available = ring.device.availableCount()
            XCTAssertGreaterThan(available, 0)
            for k in 0..<available {
                guard let head = ring.device.peekAvailable(ahead: k),
                      let n = ring.device.readChain(head: head, into: ring.segments, capacity: 64) else {
                    return XCTFail("device: \(ring.device.violation.map { "\($0)" } ?? "?")")
                }
                XCTAssertEqual(n, expected[k].count)
                for i in 0..<n { XCTAssertEqual(ring.segments[i].length, UInt32(100 + i)) }
                ring.device.putUsed(head: head, length: UInt32(n))
            }
            ring.device.skipAvailable(available)
            _ = ring.device.publishUsed()
            // Driver: collect in order, every tail cookie included.
            XCTAssertEqual(ring.driver.usedCount(), available)
            for _ in 0..<available {
                var tails: [UInt32] = []
                guard let (cookie, length) = ring.driver.takeUsed({ tails.append($0) }) else {
                    return XCTFail("driver: \(ring.driver.violation.map { "\($0)" } ?? "?")")
                }
                let chain = expected.removeFirst()
                XCTAssertEqual(cookie, chain.first)
                XCTAssertEqual(Int(length), chain.count)
                XCTAssertEqual(tails, (1..<chain.count).map { chain.first + UInt32($0) })
            }
            XCTAssertEqual(ring.driver.freeDescriptors, 8)
        }
        XCTAssertNil(ring.driver.violation)
        XCTAssertNil(ring.device.violation)
    }

    /// The device completes out of order: used descriptors go in completion order, each
    /// skipping its own chain's length; the driver follows by id.
    func testOutOfOrderCompletionsAreFollowedByID() {
        let ring = PackedFixture(size: 8)
        XCTAssertTrue(ring.driver.addChain(count: 2, deviceWritable: true) { i in (UInt64(i), 10, 100 + UInt32(i)) })
        XCTAssertTrue(ring.driver.add(address: 9, length: 20, deviceWritable: true, cookie: 200))
        _ = ring.driver.publish()
        XCTAssertEqual(ring.device.availableCount(), 2)
        // The single buffer (slot 2) completes first: written at slot 0, skipping 1 slot;
        // then the chain: at slot 1, skipping 2.
        let singleID = ring.memory.descriptors[2].id
        let chainID = ring.memory.descriptors[1].id
        ring.writeUsed(slot: 1, id: chainID, length: 7, wrap: true)
        ring.writeUsed(slot: 0, id: singleID, length: 5, wrap: true)
        XCTAssertEqual(ring.driver.usedCount(), 2)
        XCTAssertEqual(ring.driver.takeUsed({ _ in }).map { [$0.cookie, $0.length] }, [200, 5])
        var tails: [UInt32] = []
        XCTAssertEqual(ring.driver.takeUsed({ tails.append($0) }).map { [$0.cookie, $0.length] }, [100, 7])
        XCTAssertEqual(tails, [101])
        XCTAssertEqual(ring.driver.freeDescriptors, 8)
        XCTAssertNil(ring.driver.violation)
    }

    /// Hostile used descriptors: an id never handed out, one named twice, a chain that runs
    /// past the slots published. Each stops the ring with a reason; nothing is freed twice.
    func testHostileUsedDescriptorsStopTheRing() {
        do {
            let ring = PackedFixture(size: 8)
            ring.driver.add(address: 1, length: 1, deviceWritable: true, cookie: 1)
            _ = ring.driver.publish()
            ring.writeUsed(slot: 0, id: 5, length: 0, wrap: true)
            XCTAssertEqual(ring.driver.usedCount(), 0)
            XCTAssertNotNil(ring.driver.violation)
        }
        do {
            let ring = PackedFixture(size: 8)
            ring.driver.add(address: 1, length: 1, deviceWritable: true, cookie: 1)
            ring.driver.add(address: 2, length: 1, deviceWritable: true, cookie: 2)
            _ = ring.driver.publish()
            let id = ring.memory.descriptors[0].id
            ring.writeUsed(slot: 0, id: id, length: 0, wrap: true)
            ring.writeUsed(slot: 1, id: id, length: 0, wrap: true)
            XCTAssertEqual(ring.driver.usedCount(), 2)
            XCTAssertNotNil(ring.driver.takeUsed({ _ in }))
            XCTAssertNil(ring.driver.takeUsed({ _ in }), "the same buffer twice")
            XCTAssertNotNil(ring.driver.violation)
            XCTAssertEqual(ring.driver.freeDescriptors, 7, "freed once only")
        }
        do {
            let ring = PackedFixture(size: 8)
            ring.driver.add(address: 1, length: 1, deviceWritable: true, cookie: 1)
            _ = ring.driver.publish()
            // A used descriptor where nothing was published (slot 1).
            ring.writeUsed(slot: 0, id: ring.memory.descriptors[0].id, length: 0, wrap: true)
            ring.writeUsed(slot: 1, id: 3, length: 0, wrap: true)
            XCTAssertEqual(ring.driver.usedCount(), 1, "the scan stops at the slots published")
            XCTAssertNil(ring.driver.violation)
        }
        do {
            // A chain of 3 published; the device names it at slot 0 but a chain of 4 would be
            // needed to account for a used descriptor written at slot 3.
            let ring = PackedFixture(size: 4)
            XCTAssertTrue(ring.driver.addChain(count: 3, deviceWritable: true) { i in (UInt64(i), 1, UInt32(i)) })
            _ = ring.driver.publish()
            ring.writeUsed(slot: 0, id: ring.memory.descriptors[0].id, length: 0, wrap: true)
            XCTAssertEqual(ring.driver.usedCount(), 1)
            ring.writeUsed(slot: 3, id: 1, length: 0, wrap: true)
            XCTAssertEqual(ring.driver.usedCount(), 1, "nothing published there: not looked at")
            XCTAssertNil(ring.driver.violation)
        }
    }

    /// The driver's batch becomes visible all at once: until `publish`, the device sees nothing.
    func testBatchIsInvisibleUntilPublished() {
        let ring = PackedFixture(size: 8)
        for k in 0..<3 { ring.driver.add(address: UInt64(k), length: 1, deviceWritable: false, cookie: UInt32(k)) }
        XCTAssertEqual(ring.device.availableCount(), 0)
        XCTAssertTrue(ring.driver.publish(), "the device event area says ENABLE (zeroed)")
        XCTAssertEqual(ring.device.availableCount(), 3)
        // And the device's used descriptors become visible at its publish.
        for k in 0..<3 {
            ring.device.putUsed(head: ring.device.peekAvailable(ahead: k)!, length: 0)
        }
        ring.device.skipAvailable(3)
        XCTAssertEqual(ring.driver.usedCount(), 0)
        _ = ring.device.publishUsed()
        XCTAssertEqual(ring.driver.usedCount(), 3)
    }

    /// Event suppression: DISABLE silences the other side, ENABLE asks for every notification,
    /// and DESC (with EVENT_IDX) asks at one position, including across a wrap.
    func testEventSuppression() {
        let ring = PackedFixture(size: 8)
        ring.device.setNotificationsEnabled(false)
        ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: 0)
        XCTAssertFalse(ring.driver.publish(), "the device said DISABLE")
        ring.device.setNotificationsEnabled(true)
        ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: 1)
        XCTAssertTrue(ring.driver.publish(), "the device said ENABLE")

        // Kicks at one descriptor: slot 4, wrap counter 1.
        ring.driver.usesEventIndex = true
        cvs_pevent_off_wrap(ring.memory.deviceEvent).pointee = 0x8000 | 4
        cvs_pevent_flags(ring.memory.deviceEvent).pointee = UInt16(CVS_RING_EVENT_FLAGS_DESC)
        ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: 2)   // slot 2
        XCTAssertFalse(ring.driver.publish(), "slot 4 not reached")
        ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: 3)   // slot 3
        ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: 4)   // slot 4
        XCTAssertTrue(ring.driver.publish(), "slot 4 made available")

        // The driver asks for an interrupt at used slot 1 of the next lap (wrap counter 0).
        ring.device.usesEventIndex = true
        XCTAssertEqual(ring.device.availableCount(), 5)
        for k in 0..<5 { ring.device.putUsed(head: ring.device.peekAvailable(ahead: k)!, length: 0) }
        ring.device.skipAvailable(5)
        cvs_pevent_off_wrap(ring.memory.driverEvent).pointee = 1
        cvs_pevent_flags(ring.memory.driverEvent).pointee = UInt16(CVS_RING_EVENT_FLAGS_DESC)
        XCTAssertFalse(ring.device.publishUsed(), "used slots 0…4 of the first lap: not there yet")
        XCTAssertEqual(ring.driver.usedCount(), 5)
        for _ in 0..<5 { XCTAssertNotNil(ring.driver.takeUsed({ _ in })) }
        for k in 0..<5 { ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: UInt32(10 + k)) }   // slots 5, 6, 7, 0, 1
        _ = ring.driver.publish()
        XCTAssertEqual(ring.device.availableCount(), 5)
        for k in 0..<5 { ring.device.putUsed(head: ring.device.peekAvailable(ahead: k)!, length: 0) }
        ring.device.skipAvailable(5)
        XCTAssertTrue(ring.device.publishUsed(), "slot 1 of the second lap used")
        XCTAssertEqual(ring.driver.usedCount(), 5, "wrap counters flipped on both sides")
    }

    /// SET_VRING_BASE values: slot and wrap counter; a slot outside the ring is refused.
    func testVringBase() {
        XCTAssertTrue(PackedRingDevice.isValidBase(0x8000, size: 256))
        XCTAssertTrue(PackedRingDevice.isValidBase(0x00FF, size: 256))
        XCTAssertFalse(PackedRingDevice.isValidBase(0x8100, size: 256))
        let ring = PackedFixture(size: 8)
        XCTAssertEqual(ring.driver.vringBase, 0x8000)
        XCTAssertEqual(ring.device.vringBase, 0x8000)
        ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: 0)
        _ = ring.driver.publish()
        _ = ring.device.availableCount()
        ring.device.skipAvailable(1)
        XCTAssertEqual(ring.device.vringBase, 0x8001)
    }

    /// A non-power-of-two size works (packed rings allow it).
    func testOddSizedRing() {
        let ring = PackedFixture(size: 5)
        for lap in 0..<7 {
            for k in 0..<3 { XCTAssertTrue(ring.driver.add(address: 0, length: 1, deviceWritable: false, cookie: UInt32(lap * 3 + k))) }
            _ = ring.driver.publish()
            XCTAssertEqual(ring.device.availableCount(), 3)
            for k in 0..<3 { ring.device.putUsed(head: ring.device.peekAvailable(ahead: k)!, length: 0) }
            ring.device.skipAvailable(3)
            _ = ring.device.publishUsed()
            XCTAssertEqual(ring.driver.usedCount(), 3)
            for k in 0..<3 { XCTAssertEqual(ring.driver.takeUsed({ _ in })?.cookie, UInt32(lap * 3 + k)) }
        }
    }
}
