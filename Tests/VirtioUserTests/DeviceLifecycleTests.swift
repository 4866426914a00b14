import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import SystemPackage
import XCTest

/// Start, stop, restart, link state, negotiation results and the control-path message order.
final class DeviceLifecycleTests: XCTestCase {
    func testNegotiatesVersion1AndTheProtocolFeaturesWeImplement() throws {
        let backend = try startBackend(self)
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        XCTAssertEqual(device.linkState, .down(reason: .notStarted))
        try device.start()
        // MTU and STATUS: our back-end serves both in its config space (CONFIG); MAC it offers
        // only when it has one, MQ we ask for only with more than one pair.
        XCTAssertEqual(device.negotiatedFeatures, defaultFeaturesWithOurBackend)
        XCTAssertEqual(device.protocolFeatures, [.multiqueue, .replyAck, .mtu, .config, .status])
        XCTAssertEqual(device.mtu, 1500)
        XCTAssertTrue(device.macAddress.isLocallyAdministered)
        XCTAssertFalse(device.macAddress.isMulticast)
        XCTAssertEqual(device.memoryBacking, .memfd)
        XCTAssertEqual(device.linkState, .up)
    }

    /// The order is DPDK virtio-user's (../shared/DESIGN.md §4), as the back-end saw it, against
    /// a back-end with DPDK vhost's protocol features (no CONFIG, so no GET_CONFIG).
    func testMessageOrderMatchesDPDKVirtioUser() throws {
        let backend = try startBackend(self) { $0.offeredProtocolFeatures = [.multiqueue, .replyAck, .mtu, .status] }
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        device.stop()
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        let expected = [
            "SET_OWNER", "GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES", "GET_QUEUE_NUM",
            "SET_VRING_CALL", "SET_VRING_CALL", "SET_FEATURES", "SET_STATUS", "GET_STATUS", "SET_MEM_TABLE",
            "SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK",
            "SET_VRING_NUM", "SET_VRING_BASE", "SET_VRING_ADDR", "SET_VRING_KICK",
            "SET_VRING_ENABLE", "SET_VRING_ENABLE", "SET_STATUS",
            "SET_VRING_ENABLE", "SET_VRING_ENABLE", "GET_VRING_BASE", "GET_VRING_BASE",
        ]
        XCTAssertEqual(backend.requestTraces.first, expected)
    }

    /// A back-end without VHOST_USER_F_PROTOCOL_FEATURES: no protocol-feature messages, rings
    /// enabled by their kick, traffic still flows.
    func testBackendWithoutProtocolFeaturesStillWorks() throws {
        let backend = try startBackend(self) { $0.offeredFeatures = [.version1] }
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(device.negotiatedFeatures, [.version1])
        XCTAssertEqual(device.protocolFeatures, [])
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: 7), total: 5000)
        XCTAssertEqual(result.intact, 5000)
        device.stop()
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        let trace = backend.requestTraces.first ?? []
        XCTAssertFalse(trace.contains("GET_PROTOCOL_FEATURES"))
        XCTAssertFalse(trace.contains("SET_VRING_ENABLE"))
    }

    /// A legacy-only back-end (no VERSION_1) is refused with a clear error.
    func testBackendWithoutVersion1IsRefused() throws {
        let backend = try startBackend(self) { $0.offeredFeatures = [.vhostUserProtocolFeatures] }
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        XCTAssertThrowsError(try device.start()) { error in
            guard case .negotiation(.missingFeature(let feature, let offered))? = error as? VirtioError else {
                return XCTFail("expected .negotiation(.missingFeature), got \(error)")
            }
            XCTAssertTrue(feature.hasPrefix("VIRTIO_F_VERSION_1"), feature)
            XCTAssertFalse(offered.contains(.version1))
        }
        if case .up = device.linkState { XCTFail("link must be down after a failed start") }
    }

    func testStartTwiceIsRefusedAndStopThenStartAgainCarriesTraffic() throws {
        let backend = try startBackend(self)
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        device.stop()  // harmless before start
        try device.start()
        XCTAssertThrowsError(try device.start()) { error in
            XCTAssertEqual(error as? VirtioError, .state(.alreadyRunning("The device")))
        }
        for round in 0..<3 {
            let result = runLoopbackStream(device: device, stream: FrameStream(seed: UInt64(round)), total: 3000)
            XCTAssertEqual(result.intact, 3000, "round \(round)")
            device.stop()
            XCTAssertEqual(device.linkState, .down(reason: .stopped))
            XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize)
            let burst = PacketBurst()
            XCTAssertEqual(device.receive(into: burst), 0, "a stopped device moves nothing")
            if round < 2 { try device.start() }
        }
        XCTAssertEqual(backend.statistics.connections, 3)
    }

    /// The back-end going away brings the link down; the device reports it instead of crashing.
    func testLinkGoesDownWhenTheBackendStops() throws {
        let path = try makeSocketPath(self)
        let backend = try VhostUserBackend(configuration: .init(socketPath: path))
        try backend.start()
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(device.linkState, .up)
        backend.stop()
        XCTAssertTrue(waitUntil { device.linkState != .up })
        // Transmitting into a dead peer neither crashes nor loses buffers.
        let burst = PacketBurst()
        for _ in 0..<100 {
            device.allocate(into: burst, count: burst.space)
            device.transmit(burst)
        }
        device.release(burst)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize)
    }

    func testConnectFailsClearlyWhenNoBackendListens() throws {
        let path = try makeSocketPath(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.connectTimeoutMilliseconds = 200
        let device = try VirtioUserDevice(configuration: configuration)
        XCTAssertThrowsError(try device.start()) { error in
            XCTAssertEqual(error as? VirtioError, .connection(.unreachable(path: path, errno: .noSuchFileOrDirectory)))
            XCTAssertEqual((error as? VirtioError)?.errno, .noSuchFileOrDirectory)
            XCTAssertTrue("\(error)".contains(path))
        }
    }

    /// Client mode retries until a back-end that starts late is listening.
    func testConnectRetriesUntilTheBackendAppears() throws {
        let path = try makeSocketPath(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.connectTimeoutMilliseconds = 20_000
        let device = try VirtioUserDevice(configuration: configuration)
        let starter = try DedicatedThread(name: "late-backend") {
            MonotonicClock.sleep(milliseconds: 300)
            if let backend = try? VhostUserBackend(configuration: .init(socketPath: path)) {
                try? backend.start()
                // Keep it alive while the device connects and exchanges traffic.
                MonotonicClock.sleep(milliseconds: 3000)
                backend.stop()
            }
        }
        try device.start()
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: 9), total: 1000)
        XCTAssertEqual(result.intact, 1000)
        device.stop()
        starter.join()
    }

    func testInvalidConfigurationsAreRefused() throws {
        for size in [0, 32, 100, 65536] {
            var configuration = VirtioUserDevice.Configuration(socketPath: "/tmp/unused.sock")
            configuration.queueSize = size
            XCTAssertThrowsError(try VirtioUserDevice(configuration: configuration), "queue size \(size)") { error in
                XCTAssertEqual(error as? VirtioError, .configuration(InvalidSetting(field: "queueSize", value: "\(size)", requirement: "a power of two from 64 to 32768")))
            }
        }
        var configuration = VirtioUserDevice.Configuration(socketPath: "/tmp/unused.sock")
        configuration.burstSize = 0
        XCTAssertThrowsError(try VirtioUserDevice(configuration: configuration))
    }

    /// Buffers handed back twice are ignored (and counted) instead of corrupting the pool;
    /// frames too long for a buffer are refused and counted as errors.
    func testMisuseOfBuffersIsContained() throws {
        let backend = try startBackend(self, mode: .sink)
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        let burst = PacketBurst(capacity: 4)
        XCTAssertEqual(device.allocate(into: burst, count: 4), 4)
        let copy = burst[3]  // released last, so taken first: the pool is a stack
        device.release(burst)
        let again = PacketBurst(capacity: 4)
        XCTAssertEqual(device.allocate(into: again, count: 1), 1)
        var packet = again[0]
        XCTAssertEqual(packet.slot, copy.slot)
        packet.length = VirtioUserDevice.maximumFrameLength + 1
        again[0] = packet
        XCTAssertEqual(device.transmit(again), 1)
        XCTAssertEqual(device.statistics.tx.drops, 1)
        XCTAssertEqual(device.statistics.tx.errors, 0)
        XCTAssertEqual(device.statistics.tx.packets, 0)
        // Releasing the same slot twice: the second is refused, so no slot gets two owners.
        // (The buffer overwritten in the burst is the caller's leak, and stays out of the pool.)
        XCTAssertEqual(device.allocate(into: burst, count: 2), 2)
        burst[1] = burst[0]
        device.release(burst)
        XCTAssertEqual(device.invalidReleases(), 1)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize - 1)
    }
}
