import Logging
import MetricsTestKit
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Control-path events reach swift-log, and the counters reach swift-metrics on demand, for
/// the device and the back-end.
final class TelemetryTests: XCTestCase {
    func testDeviceLogsLinkUpWithTheNegotiationAndLinkDownWithTheReason() throws {
        let backendLog = LogCapture()
        let backend = try startBackend(self) { $0.logger = backendLog.logger() }
        let log = LogCapture()
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.logger = log.logger()
        configuration.packedRing = true
        configuration.reconnectTimeoutMilliseconds = 200
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        let up = try XCTUnwrap(log.named("link up").first, "\(log.all.map(\.message))")
        XCTAssertEqual(up.level, .info)
        XCTAssertEqual(up.metadata["rings"], "packed")
        XCTAssertEqual(up.metadata["session"], "1")
        XCTAssertEqual(up.metadata["socket"], backend.configuration.socketPath)
        XCTAssertTrue(up.metadata["features"]?.contains("RING_PACKED") == true, "\(up.metadata)")
        XCTAssertEqual(up.metadata["mtu"], "\(device.mtu)")

        // The back-end goes away: a warning with the reason, then giving up after 200 ms.
        backend.stop()
        XCTAssertTrue(waitUntil { log.named("gave up reconnecting").count == 1 }, "\(log.all.map(\.message))")
        let down = try XCTUnwrap(log.named("link down").first)
        XCTAssertEqual(down.level, .warning)
        XCTAssertEqual(down.metadata["reason"], "\(VirtioUserDevice.LinkDownReason.backEndClosed)")
        XCTAssertEqual(log.named("gave up reconnecting").first?.level, .error)
        device.stop()

        // The back-end's side of the same session.
        XCTAssertEqual(backendLog.named("front-end connected").count, 1)
        let started = try XCTUnwrap(backendLog.named("front-end's rings started").first, "\(backendLog.all.map(\.message))")
        XCTAssertEqual(started.metadata["rings"], "packed")
        XCTAssertEqual(backendLog.named("session ended: the back-end is stopping").count, 1)
    }

    func testAnOrderlyStopIsInfoAndAFailedNegotiationIsAnError() throws {
        let backend = try startBackend(self)
        let log = LogCapture()
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.logger = log.logger()
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        device.stop()
        XCTAssertEqual(log.named("link down").map(\.level), [.info])
        XCTAssertEqual(log.named("link down").first?.metadata["reason"], "stopped")

        // A back-end serving 1 pair, a device wanting 2: negotiation fails, logged as an error.
        let small = try startBackend(self) { $0.queuePairs = 1 }
        configuration.socketPath = small.configuration.socketPath
        configuration.queuePairs = 2
        let failing = try VirtioUserDevice(configuration: configuration)
        XCTAssertThrowsError(try failing.start())
        let failure = try XCTUnwrap(log.named("negotiation with the back-end failed").first)
        XCTAssertEqual(failure.level, .error)
        XCTAssertTrue(failure.metadata["error"]?.contains("queue pair") == true, "\(failure.metadata)")
    }

    func testBackendLogsAProtocolErrorWithItsMessage() throws {
        let log = LogCapture()
        let backend = try startBackend(self) { $0.logger = log.logger() }
        let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
        try peer.negotiate()
        try peer.send(.setVringNum(VringState(index: 0, num: 3)))
        XCTAssertTrue(peer.waitForHangUp())
        XCTAssertTrue(waitUntil { !log.named("session closed").isEmpty })
        let closed = try XCTUnwrap(log.named("session closed").first)
        XCTAssertEqual(closed.level, .error)
        XCTAssertTrue(closed.metadata["error"]?.contains("SET_VRING_NUM 3") == true, "\(closed.metadata)")
    }

    /// The device's counters, per queue pair and direction, equal its statistics after each
    /// update (so updates add deltas, not totals); the link gauge follows the link.
    func testDeviceMetricsFollowTheStatistics() throws {
        let backend = try startBackend(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.queuePairs = 2
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        let metrics = TestMetrics()
        let reporter = VirtioUserDeviceMetrics(device: device, factory: metrics)
        for round in 1...2 {
            XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: UInt64(round)), total: 5000, queue: 1).intact, 5000)
            reporter.update()
            let stats = device.statistics
            for (queue, pair) in stats.queuePairs.enumerated() {
                for (direction, counters) in [("rx", pair.rx), ("tx", pair.tx)] {
                    let dimensions = [("queue", String(queue)), ("direction", direction)]
                    XCTAssertEqual(try metrics.expectCounter("virtio_user_packets", dimensions).totalValue, Int64(counters.packets), "round \(round) \(dimensions)")
                    XCTAssertEqual(try metrics.expectCounter("virtio_user_bytes", dimensions).totalValue, Int64(counters.bytes))
                    XCTAssertEqual(try metrics.expectCounter("virtio_user_drops", dimensions).totalValue, Int64(counters.drops))
                    XCTAssertEqual(try metrics.expectCounter("virtio_user_errors", dimensions).totalValue, Int64(counters.errors))
                }
            }
            XCTAssertEqual(try metrics.expectCounter("virtio_user_packets", [("queue", "1"), ("direction", "tx")]).totalValue, Int64(5000 * round))
            XCTAssertEqual(try metrics.expectGauge("virtio_user_link_up").lastValue, 1)
        }
        device.stop()
        reporter.update()
        XCTAssertEqual(try metrics.expectGauge("virtio_user_link_up").lastValue, 0)
    }

    func testBackendMetricsFollowTheStatistics() throws {
        let backend = try startBackend(self) { $0.queuePairs = 2 }
        let metrics = TestMetrics()
        let reporter = VhostUserBackendMetrics(backend: backend, factory: metrics)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 9), total: 3000).intact, 3000)
        device.stop()
        XCTAssertTrue(waitUntil { backend.statistics.connections == 1 && backend.requestTraces.count == 1 })
        reporter.update()
        let stats = backend.statistics
        XCTAssertEqual(try metrics.expectCounter("vhost_user_backend_frames", [("queue", "0"), ("direction", "received")]).totalValue, 3000)
        XCTAssertEqual(try metrics.expectCounter("vhost_user_backend_frames", [("queue", "0"), ("direction", "sent")]).totalValue, 3000)
        XCTAssertEqual(try metrics.expectCounter("vhost_user_backend_frames", [("queue", "1"), ("direction", "sent")]).totalValue, 0)
        XCTAssertEqual(try metrics.expectCounter("vhost_user_backend_bytes_received").totalValue, Int64(stats.bytesReceived))
        XCTAssertEqual(try metrics.expectCounter("vhost_user_backend_connections").totalValue, 1)
        XCTAssertEqual(try metrics.expectCounter("vhost_user_backend_protocol_errors").totalValue, 0)
    }
}
