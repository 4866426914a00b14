import Synchronization
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Two queue pairs against DPDK testpmd, in both directions: our device against testpmd's
/// vhost PMD (`net_vhost0,…,queues=2`), and testpmd's virtio-user (`virtio_user0,…,queues=2`)
/// against our back-end.
final class MultiqueueWithTestPMDTests: XCTestCase {
    /// Our device with 2 pairs, one thread each, through testpmd vhost io forwarding (pair n's
    /// frames come back on pair n): every frame back intact on its own pair.
    func testOurDeviceWithTwoPairsThroughTestPMDVhost() throws {
        let path = try makeSocketPath(self)
        let testpmd = try TestPMD(.vhost, socket: path, ["--forward-mode", "io", "--queues", "2"])
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.queuePairs = 2
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.linkState, .up)
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMultiqueue), "\(device.negotiatedFeatures)")

        let perPair: UInt64 = 200_000
        // At most 128 frames in flight per pair: testpmd drops rather than waits.
        let results = try runLoopbackStreamsOnEveryPair(device: device, total: perPair, window: 128) {
            FrameStream(seed: 0xA11CE + UInt64($0), minimumLength: 64, maximumLength: 1518)
        }
        device.stop()
        let totals = try testpmd.stop()
        print("interop: our device, 2 queue pairs -> testpmd vhost queues=2 io: \(results.enumerated().map { "pair \($0.offset) sent \($0.element.sent) intact \($0.element.intact)" }.joined(separator: ", ")); "
              + "testpmd RX \(totals.rxPackets) TX \(totals.txPackets)")
        for queue in 0..<2 {
            XCTAssertEqual(results[queue].sent, perPair, "pair \(queue): " + testpmd.output.suffix(1500))
            XCTAssertEqual(results[queue].intact, perPair, "pair \(queue): every frame back intact on its own pair")
        }
        XCTAssertEqual(totals, TestPMD.Totals(rxPackets: 2 * perPair, rxDropped: 0, txPackets: 2 * perPair, txDropped: 0))
        let stats = device.statistics
        for queue in 0..<2 {
            XCTAssertEqual(stats.queuePairs[queue].tx.packets, perPair)
            XCTAssertEqual(stats.queuePairs[queue].rx.packets, perPair)
            XCTAssertEqual(device.availableBuffers(queue: queue), stats.poolSize / 2)
        }
        XCTAssertEqual(stats.tx.drops + stats.rx.drops + stats.tx.errors + stats.rx.errors, 0)
    }

    /// testpmd's virtio-user with queues=2 (its control queue turns the pair count into
    /// SET_VRING_ENABLE) into our loopback with --tx-first: a burst circulates on each pair, and
    /// both pairs carry traffic.
    func testTestPMDVirtioUserWithTwoQueuesAgainstOurBackend() throws {
        let backend = try startBackend(self, mode: .loopback)
        let path = backend.configuration.socketPath
        let testpmd = try TestPMD(.virtioUser, socket: path,
                                  ["--forward-mode", "io", "--tx-first", "--multi-flow", "--txpkts", "256", "--queues", "2"])
        XCTAssertTrue(waitUntil(seconds: 30) {
            let stats = backend.statistics
            return stats.framesSentByQueuePair[0] >= 100_000 && stats.framesSentByQueuePair[1] >= 100_000
        }, "both pairs circulate: \(backend.statistics.framesSentByQueuePair.prefix(2)) " + testpmd.output.suffix(1500))
        let totals = try testpmd.stop()
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        let stats = backend.statistics
        print("interop: testpmd virtio-user queues=2 io --tx-first -> our loopback: testpmd TX \(totals.txPackets) RX \(totals.rxPackets); "
              + "back-end per pair received \(stats.framesReceivedByQueuePair.prefix(2)) sent \(stats.framesSentByQueuePair.prefix(2))")
        XCTAssertEqual(backend.negotiations.first?.features.contains(.netMultiqueue), true)
        XCTAssertEqual(totals.txDropped + totals.rxDropped, 0)
        XCTAssertLessThanOrEqual(totals.txPackets - totals.rxPackets, 64, "all but the two bursts in flight come back")
        XCTAssertEqual(stats.framesSent, stats.framesReceived)
        XCTAssertEqual(stats.drops, 0)
        XCTAssertEqual(stats.protocolErrors, 0, stats.lastError.map { "\($0)" } ?? "")
        XCTAssertEqual(stats.framesReceivedByQueuePair.dropFirst(2).reduce(0, +), 0, "only pairs 0 and 1 are enabled")
        let trace = backend.requestTraces.first ?? []
        XCTAssertFalse(trace.contains("GET_CONFIG"), "DPDK 22.11 virtio-user never asks for the config space")
    }
}
