import Synchronization
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Several queue pairs (VIRTIO_NET_F_MQ) against our back-end, each pair driven by its own
/// thread: every frame comes back intact on the pair it left from, every pool balances.
final class MultiqueueTests: XCTestCase {
    /// Streams `total` frames on each pair at once, one thread per pair. Each pair's frames come
    /// from its own seed, so a frame delivered on the wrong pair fails the byte comparison.
    private func runPairs(_ device: VirtioUserDevice, total: UInt64) throws -> [(sent: UInt64, intact: UInt64, mismatched: UInt64)] {
        try runLoopbackStreamsOnEveryPair(device: device, total: total) { FrameStream(seed: 0x5EED_0000 + UInt64($0)) }
    }

    func testFourPairsEachOnItsOwnThreadCarryFramesIntact() throws {
        let backend = try startBackend(self, mode: .loopback)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.queuePairs = 4
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.linkState, .up)
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMultiqueue), "\(device.negotiatedFeatures)")
        XCTAssertTrue(device.protocolFeatures.contains(.multiqueue))

        let total: UInt64 = 50_000
        let results = try runPairs(device, total: total)
        for (queue, result) in results.enumerated() {
            XCTAssertEqual(result.sent, total, "pair \(queue)")
            XCTAssertEqual(result.intact, total, "pair \(queue): every frame back intact, on its own pair")
            XCTAssertEqual(result.mismatched, 0, "pair \(queue)")
        }
        device.stop()
        let stats = device.statistics
        XCTAssertEqual(stats.queuePairs.count, 4)
        for (queue, pair) in stats.queuePairs.enumerated() {
            XCTAssertEqual(pair.tx.packets, total, "pair \(queue)")
            XCTAssertEqual(pair.rx.packets, total, "pair \(queue)")
            XCTAssertEqual(pair.tx.packets, pair.tx.completed + pair.tx.drops, "pair \(queue)")
            XCTAssertEqual(pair.tx.errors + pair.rx.errors + pair.rx.drops, 0, "pair \(queue)")
            XCTAssertEqual(device.availableBuffers(queue: queue), stats.poolSize / 4, "pair \(queue)'s pool is whole")
            XCTAssertEqual(device.invalidReleases(queue: queue), 0)
        }
        XCTAssertEqual(stats.tx.packets, 4 * total)
        XCTAssertEqual(stats.rx.packets, 4 * total)
        XCTAssertEqual(backend.statistics.framesSent, 4 * total)
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
        // All eight rings were set up and enabled, and stopped again. The trace is kept when
        // the back-end sees the connection close, which may be just after stop() returns.
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 }, "the back-end saw the session end")
        let trace = backend.requestTraces.last ?? []
        XCTAssertEqual(trace.filter { $0 == "SET_VRING_KICK" }.count, 8, "\(trace)")
        XCTAssertEqual(trace.filter { $0 == "SET_VRING_ENABLE" }.count, 16, "8 enables and 8 disables: \(trace)")
        XCTAssertEqual(trace.filter { $0 == "GET_VRING_BASE" }.count, 8)
    }

    /// A buffer handed to another pair is refused and counted, never adopted: both pools stay
    /// whole.
    func testBufferOfAnotherPairIsRefusedNotAdopted() throws {
        let backend = try startBackend(self, mode: .loopback)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.queuePairs = 2
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        let burst = PacketBurst(capacity: 8)
        fillWithFrames(burst, from: device)   // from pair 0's pool
        XCTAssertEqual(device.transmit(burst, queue: 1), 8, "taken off the burst")
        XCTAssertEqual(device.invalidReleases(queue: 1), 8, "and refused by pair 1")
        XCTAssertEqual(device.statistics.queuePairs[1].tx.drops, 8)
        fillWithFrames(burst, from: device)
        device.release(burst, queue: 1)
        XCTAssertEqual(device.invalidReleases(queue: 1), 16)
        XCTAssertTrue(burst.isEmpty)
        device.stop()
        let perPool = device.statistics.poolSize / 2
        XCTAssertEqual(device.availableBuffers(queue: 1), perPool, "pair 1 adopted nothing")
        // Pair 0 lost the 16 buffers that were passed to pair 1: the caller's bug, counted.
        XCTAssertEqual(device.availableBuffers(queue: 0), perPool - 16)
        XCTAssertEqual(device.transmit(burst, queue: 7), 0, "no such pair: nothing happens")
    }

    /// More pairs than the back-end serves: a clear error naming both numbers, link down.
    func testMorePairsThanTheBackendServesIsAClearError() throws {
        let backend = try startBackend(self, mode: .loopback) { $0.queuePairs = 2 }
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.queuePairs = 3
        let device = try VirtioUserDevice(configuration: configuration)
        XCTAssertThrowsError(try device.start()) { error in
            XCTAssertEqual(error as? VirtioError, .negotiation(.queuePairs(offered: 2, wanted: 3)))
        }
        XCTAssertNotEqual(device.linkState, .up)
    }

    /// A back-end without MQ: one pair works, two are refused before any ring is set up.
    func testTwoPairsNeedMultiqueueFromTheBackend() throws {
        let backend = try startBackend(self, mode: .loopback) { $0.offeredFeatures.remove(.netMultiqueue) }
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.queuePairs = 2
        XCTAssertThrowsError(try VirtioUserDevice(configuration: configuration).start()) { error in
            guard case .negotiation(.missingFeature(let feature, let offered))? = error as? VirtioError else {
                return XCTFail("expected .negotiation(.missingFeature), got \(error)")
            }
            XCTAssertTrue(feature.hasPrefix("VIRTIO_NET_F_MQ"), feature)
            XCTAssertFalse(offered.contains(.netMultiqueue))
        }
        configuration.queuePairs = 1
        let single = try VirtioUserDevice(configuration: configuration)
        try single.start()
        XCTAssertFalse(single.negotiatedFeatures.contains(.netMultiqueue))
        XCTAssertEqual(runLoopbackStream(device: single, stream: FrameStream(seed: 9), total: 1000).intact, 1000)
    }

    func testQueuePairCountIsValidated() {
        var configuration = VirtioUserDevice.Configuration(socketPath: "/nonexistent")
        for bad in [0, -1, VirtioUserDevice.maximumQueuePairs + 1] {
            configuration.queuePairs = bad
            XCTAssertThrowsError(try VirtioUserDevice(configuration: configuration), "\(bad)")
        }
    }
}
