import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Frames longer than one buffer: chained on transmit, spread over mergeable receive buffers
/// on the way back (VIRTIO_NET_F_MRG_RXBUF), up to 9,216-byte jumbo frames.
final class JumboFrameTests: XCTestCase {
    /// 20,000 frames of random sizes 60…9,216 go out as chains and come back merged, byte for
    /// byte, with balanced counters and every buffer back in the pool.
    func testJumboFramesGoOutInIndirectTablesAndComeBackMergedIntact() throws {
        try jumboFrames(indirect: true)
    }

    /// The same with plain descriptor chains (indirect descriptors not negotiated).
    func testJumboFramesGoOutChainedAndComeBackMergedIntact() throws {
        try jumboFrames(indirect: false)
    }

    private func jumboFrames(indirect: Bool) throws {
        let backend = try startBackend(self, mode: .loopback)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.indirectDescriptors = indirect
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.negotiatedFeatures.contains(.ringIndirectDescriptors), indirect)
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMergeableRxBuffers), "\(device.negotiatedFeatures)")
        let total: UInt64 = 20_000
        let stream = FrameStream(seed: 0x9216, minimumLength: 60, maximumLength: 9216)
        let result = runLoopbackStream(device: device, stream: stream, total: total)
        XCTAssertEqual(result.sent, total)
        XCTAssertEqual(result.intact, total, "every frame back intact")
        device.stop()
        let stats = device.statistics
        XCTAssertEqual(stats.tx.packets, total)
        XCTAssertEqual(stats.rx.packets, total)
        XCTAssertEqual(stats.tx.bytes, stats.rx.bytes)
        XCTAssertEqual(stats.tx.packets, stats.tx.completed + stats.tx.drops)
        XCTAssertEqual(stats.tx.drops + stats.rx.drops + stats.tx.errors + stats.rx.errors, 0)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize, "every buffer of every chain is back")
        XCTAssertEqual(device.invalidReleases(), 0)
        XCTAssertEqual(backend.statistics.drops, 0)
        XCTAssertEqual(backend.statistics.framesSent, total)
        if indirect {
            XCTAssertGreaterThan(backend.statistics.indirectTables, 0, "frames of 2…8 buffers went as indirect tables")
        } else {
            XCTAssertEqual(backend.statistics.indirectTables, 0)
        }
    }

    /// Without mergeable buffers (DPDK's mrg_rxbuf=0), a frame longer than one receive buffer
    /// cannot come back: the back-end drops it and counts it; shorter ones still flow.
    func testWithoutMergeableBuffersLongFramesAreDroppedByTheBackend() throws {
        let backend = try startBackend(self, mode: .loopback)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.mergeableReceiveBuffers = false
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertFalse(device.negotiatedFeatures.contains(.netMergeableRxBuffers))
        let burst = PacketBurst(capacity: 8)
        chain(burst, from: device, lengths: [2000, 2000, 2000])
        XCTAssertEqual(device.transmit(burst), 3, "the chain goes out")
        XCTAssertTrue(waitUntil { backend.statistics.drops == 1 })
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 5), total: 1000).intact, 1000)
    }

    /// A frame of more buffers than the caller's burst can ever hold (3 against a capacity of
    /// 2) is dropped whole and counted, and the frames behind it arrive. The old receive left
    /// it at the head of the ring, waiting for room that never came: the queue stopped.
    func testAFrameLongerThanTheBurstIsDroppedNotAStall() throws {
        let backend = try startBackend(self, mode: .loopback)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMergeableRxBuffers))
        let out = PacketBurst(capacity: 4)
        chain(out, from: device, lengths: [2048, 2048, 100])  // 4,196 frame bytes + the header: 3 buffers back
        XCTAssertEqual(device.transmit(out), 3)
        let burst = PacketBurst(capacity: 2)
        XCTAssertTrue(waitUntil {
            _ = device.receive(into: burst)
            return device.statistics.rx.drops == 1
        }, "dropped and counted")
        XCTAssertEqual(burst.count, 0, "nothing of it handed out")
        // The queue goes on: short frames still arrive with the same small bursts.
        device.allocate(into: burst, count: 1)
        var short = burst[0]
        short.length = 60
        burst[0] = short
        XCTAssertEqual(device.transmit(burst), 1)
        XCTAssertTrue(waitUntil { device.receive(into: burst) == 1 }, "the queue stopped behind the long frame")
        device.release(burst)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "every buffer of the dropped frame is back")
    }

    /// Malformed chains from the caller are dropped whole and counted; every buffer returns.
    func testMalformedChainsAreDroppedWhole() throws {
        let backend = try startBackend(self, mode: .loopback)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        let burst = PacketBurst(capacity: 8)
        // A chain whose second segment claims to be a first segment.
        device.allocate(into: burst, count: 2)
        var first = burst[0]
        first.segments = 2
        first.length = 100
        burst[0] = first
        XCTAssertEqual(device.transmit(burst), 2)
        // A continuation with no first segment.
        device.allocate(into: burst, count: 1)
        var stray = burst[0]
        stray.segments = 0
        burst[0] = stray
        XCTAssertEqual(device.transmit(burst), 1)
        // A chain cut off at the end of the burst stays with the caller.
        device.allocate(into: burst, count: 2)
        var cut = burst[1]
        cut.segments = 3
        burst[1] = cut
        XCTAssertEqual(device.transmit(burst), 1, "only the frame before the incomplete chain")
        XCTAssertEqual(burst.count, 1)
        device.release(burst)
        // The frame that went out comes back (loopback publishes its transmit completion
        // first): stop() would otherwise find it in flight and count it as a drop too, which a
        // slow (sanitized) back-end made happen.
        let received = PacketBurst(capacity: 8)
        XCTAssertTrue(waitUntil { device.receive(into: received) > 0 })
        device.release(received)
        device.stop()
        let stats = device.statistics
        XCTAssertEqual(stats.tx.drops, 2)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize)
        XCTAssertEqual(device.invalidReleases(), 0)
    }

    /// Fills `burst` with one frame of `lengths.count` chained buffers of these lengths.
    private func chain(_ burst: PacketBurst, from device: VirtioUserDevice, lengths: [Int]) {
        device.allocate(into: burst, count: lengths.count)
        for (k, length) in lengths.enumerated() {
            var packet = burst[k]
            packet.length = length
            packet.segments = k == 0 ? UInt16(lengths.count) : 0
            burst[k] = packet
        }
    }
}
