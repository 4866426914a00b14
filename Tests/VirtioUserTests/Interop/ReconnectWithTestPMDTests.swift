import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// The peer process is killed (SIGKILL) and restarted: our side reports link down, then
/// renegotiates and carries traffic again, without restarting our process — both ways, in
/// both socket roles.
final class ReconnectWithTestPMDTests: XCTestCase {
    private func assertTrafficFlows(_ device: VirtioUserDevice, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        let result = runLoopbackStream(
            device: device, stream: FrameStream(seed: seed, minimumLength: 64, maximumLength: 1518),
            total: 20_000, window: 128)
        XCTAssertEqual(result.intact, 20_000, file: file, line: line)
    }

    /// Our device listens (server mode); testpmd's vhost connects to it (client=1).
    func testServerDeviceSurvivesTestPMDVhostClientBeingKilled() throws {
        let path = try makeSocketPath(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.connectionMode = .server
        configuration.connectTimeoutMilliseconds = 30_000
        let device = try VirtioUserDevice(configuration: configuration)
        // testpmd's vhost client retries the connection once a second until we listen.
        let first = try TestPMD(.vhost, socket: path, ["--client"])
        try device.start()
        assertTrafficFlows(device, seed: 1)

        try first.kill()
        XCTAssertTrue(waitUntil(seconds: 20) { device.linkState != .up }, "link must go down")
        let second = try TestPMD(.vhost, socket: path, ["--client"])
        XCTAssertTrue(waitUntil(seconds: 30) { device.linkState == .up }, "link must come back: \(device.linkState)\n\(second.output.suffix(1500))")
        XCTAssertEqual(device.connectionCount, 2)
        assertTrafficFlows(device, seed: 2)
        device.stop()
        _ = try second.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize)
    }

    /// Our device connects (client mode) to testpmd's vhost server; testpmd is killed and
    /// restarted at the same path; the device reconnects within its bound.
    func testClientDeviceReconnectsToARestartedTestPMDVhost() throws {
        let path = try makeSocketPath(self)
        let first = try TestPMD(.vhost, socket: path)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.reconnectTimeoutMilliseconds = 60_000
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        assertTrafficFlows(device, seed: 3)

        try first.kill()
        XCTAssertTrue(waitUntil(seconds: 20) { device.linkState != .up }, "link must go down")
        // A killed testpmd leaves its socket file; DPDK refuses to bind over it.
        try? FileManager.default.removeItem(atPath: path)
        let second = try TestPMD(.vhost, socket: path)
        XCTAssertTrue(waitUntil(seconds: 30) { device.linkState == .up }, "link must come back: \(device.linkState)")
        XCTAssertEqual(device.connectionCount, 2)
        assertTrafficFlows(device, seed: 4)
        device.stop()
        _ = try second.stop()
    }

    /// Our back-end connects (client mode) to testpmd's virtio-user, which listens (server=1);
    /// testpmd is killed and restarted; the back-end reconnects and frames flow again.
    func testClientBackendReconnectsToARestartedTestPMDVirtioUserServer() throws {
        let path = try makeSocketPath(self)
        var configuration = VhostUserBackend.Configuration(socketPath: path, mode: .loopback)
        configuration.connectionMode = .client
        let backend = try VhostUserBackend(configuration: configuration)
        try backend.start()
        defer { backend.stop() }

        let first = try TestPMD(.virtioUser, socket: path, ["--server", "--forward-mode", "io", "--tx-first"])
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived > 50_000 }, first.output.suffix(1500).description)
        try first.kill()
        XCTAssertTrue(waitUntil(seconds: 20) { backend.requestTraces.count == 1 }, "the back-end must see the connection end")
        let before = backend.statistics.framesReceived

        try? FileManager.default.removeItem(atPath: path)
        let second = try TestPMD(.virtioUser, socket: path, ["--server", "--forward-mode", "io", "--tx-first"])
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived > before + 50_000 }, second.output.suffix(1500).description)
        let totals = try second.stop()
        XCTAssertEqual(backend.statistics.connections, 2)
        XCTAssertEqual(backend.statistics.protocolErrors, 0, backend.statistics.lastError.map { "\($0)" } ?? "")
        XCTAssertLessThanOrEqual(totals.txPackets - totals.rxPackets, 32, "every frame of the second run comes back")
    }

    /// Our back-end listens (server mode); testpmd's virtio-user connects, is killed, and a new
    /// one connects: the back-end serves it from a fresh state.
    func testServerBackendServesARestartedTestPMDVirtioUser() throws {
        let backend = try startBackend(self, mode: .loopback)
        let path = backend.configuration.socketPath
        let first = try TestPMD(.virtioUser, socket: path, ["--forward-mode", "io", "--tx-first"])
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived > 50_000 }, first.output.suffix(1500).description)
        try first.kill()
        XCTAssertTrue(waitUntil(seconds: 20) { backend.requestTraces.count == 1 })
        let before = backend.statistics.framesReceived

        let second = try TestPMD(.virtioUser, socket: path, ["--forward-mode", "io", "--tx-first"])
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived > before + 50_000 }, second.output.suffix(1500).description)
        let totals = try second.stop()
        XCTAssertEqual(backend.statistics.connections, 2)
        XCTAssertEqual(backend.statistics.protocolErrors, 0, backend.statistics.lastError.map { "\($0)" } ?? "")
        XCTAssertLessThanOrEqual(totals.txPackets - totals.rxPackets, 32)
    }
}
