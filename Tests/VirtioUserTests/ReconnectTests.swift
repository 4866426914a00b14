import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// The back-end going away and coming back, in both socket roles, with our own peers.
final class ReconnectTests: XCTestCase {
    private func backend(_ path: String, _ mode: ConnectionMode) throws -> VhostUserBackend {
        var configuration = VhostUserBackend.Configuration(socketPath: path, mode: .loopback)
        configuration.connectionMode = mode
        let backend = try VhostUserBackend(configuration: configuration)
        try backend.start()
        return backend
    }

    private func assertTrafficFlows(_ device: VirtioUserDevice, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: seed), total: 3000)
        XCTAssertEqual(result.intact, 3000, file: file, line: line)
    }

    /// Client mode: the back-end restarts; the device goes down, reconnects by itself, and
    /// carries traffic again, with no restart of the device.
    func testClientDeviceReconnectsToARestartedBackend() throws {
        let path = try makeSocketPath(self)
        var first: VhostUserBackend? = try backend(path, .server)
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        assertTrafficFlows(device, seed: 1)

        first?.stop()
        first = nil
        XCTAssertTrue(waitUntil { device.linkState != .up }, "link must go down")
        let second = try backend(path, .server)
        defer { second.stop() }
        XCTAssertTrue(waitUntil { device.linkState == .up }, "link must come back: \(device.linkState)")
        XCTAssertEqual(device.connectionCount, 2)
        assertTrafficFlows(device, seed: 2)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "no buffer lost across the reconnection")
    }

    /// Server mode: the device listens, our back-end connects (client mode); the back-end goes
    /// away and a new one connects; traffic resumes.
    func testServerDeviceAcceptsTheBackendsReturn() throws {
        let path = try makeSocketPath(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.connectionMode = .server
        configuration.connectTimeoutMilliseconds = 10_000
        let device = try VirtioUserDevice(configuration: configuration)
        // The back-end keeps trying to connect until the device listens.
        let first = try backend(path, .client)
        try device.start()
        assertTrafficFlows(device, seed: 3)

        first.stop()
        XCTAssertTrue(waitUntil { device.linkState != .up }, "link must go down")
        let second = try backend(path, .client)
        defer { second.stop() }
        XCTAssertTrue(waitUntil { device.linkState == .up }, "link must come back: \(device.linkState)")
        XCTAssertEqual(device.connectionCount, 2)
        assertTrafficFlows(device, seed: 4)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize)
    }

    /// A listening device whose first back-end left, and whose link monitor now negotiates
    /// with a second one that connected and says nothing (each reply may take 3 s).
    private func serverDeviceNegotiatingWithASilentBackEnd() throws -> (VirtioUserDevice, OwnedDescriptor) {
        let path = try makeSocketPath(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.connectionMode = .server
        configuration.connectTimeoutMilliseconds = 10_000
        configuration.replyTimeoutMilliseconds = 3000
        let device = try VirtioUserDevice(configuration: configuration)
        let first = try backend(path, .client)
        try device.start()
        first.stop()
        XCTAssertTrue(waitUntil { device.linkState != .up }, "link must go down")
        let silent = try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 2000))
        // The monitor accepted it and sent its first request; it now waits for a reply.
        XCTAssertTrue(waitUntil { (try? Poll.waitReadable(silent.raw, milliseconds: 0)) == .readable }, "the monitor never started negotiating")
        return (device, silent)
    }

    /// `linkState` answers while the monitor waits on a silent back-end: the old monitor
    /// negotiated with the control lock held, so readers waited out the whole timeout.
    func testLinkStateNeverWaitsForAReconnection() throws {
        let (device, silent) = try serverDeviceNegotiatingWithASilentBackEnd()
        defer { _ = silent }
        let before = MonotonicClock.nanoseconds()
        XCTAssertNotEqual(device.linkState, .up)
        let waited = MonotonicClock.nanoseconds() - before
        XCTAssertLessThan(waited, 1_000_000_000, "linkState waited \(waited / 1_000_000) ms for the reconnection")
        device.stop()
    }

    /// stop() cuts that negotiation short (it shuts the socket down) instead of joining a
    /// monitor that waits out the replies.
    func testStopCutsShortANegotiationWithASilentBackEnd() throws {
        let (device, silent) = try serverDeviceNegotiatingWithASilentBackEnd()
        defer { _ = silent }
        let start = MonotonicClock.nanoseconds()
        device.stop()
        let elapsed = MonotonicClock.nanoseconds() - start
        XCTAssertLessThan(elapsed, 2_000_000_000, "stop() took \(elapsed / 1_000_000) ms; its bound is about 2 s")
    }

    /// At stop() a listening device closes its listener before it ends the session: a
    /// back-end that reconnects at once (OVS does, within a millisecond) is refused, not left
    /// in a backlog to be reset. This back-end tries when the session's end begins (the first
    /// GET_VRING_BASE); the old device still listened then.
    func testAStoppingServerRefusesABackendThatReconnectsAtOnce() throws {
        let path = try makeSocketPath(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.connectionMode = .server
        configuration.connectTimeoutMilliseconds = 10_000
        configuration.replyTimeoutMilliseconds = 500  // the script answers one GET_VRING_BASE
        let device = try VirtioUserDevice(configuration: configuration)
        let reconnected = Locked<Bool?>(nil)
        let backend = try HostileBackend(connectingTo: path, takeover: .control(.getVringBase) { channel in
            let connected = (try? UnixSocket.connect(to: path)) != nil
            reconnected.withLock { $0 = connected }
            try channel.reply(to: .getVringBase, payload: Array(repeating: 0, count: 8))
        })
        try device.start()
        device.stop()
        backend.join()
        XCTAssertEqual(reconnected.withLock { $0 }, false, "a back-end reconnecting as the session ended found the device still listening")
    }

    /// Client mode gives up after the configured bound and says so.
    func testClientReconnectionIsBounded() throws {
        let path = try makeSocketPath(self)
        let first = try backend(path, .server)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.reconnectTimeoutMilliseconds = 300
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        first.stop()
        XCTAssertTrue(waitUntil {
            device.linkState == .down(reason: .gaveUpReconnecting(milliseconds: 300))
        }, "\(device.linkState)")
        // A back-end appearing later is not picked up any more: start() is the way back.
        let second = try backend(path, .server)
        defer { second.stop() }
        XCTAssertNotEqual(device.linkState, .up)
        device.stop()
        try device.start()
        XCTAssertEqual(device.linkState, .up)
        assertTrafficFlows(device, seed: 5)
    }

    /// With reconnection off, the link stays down after the back-end leaves.
    func testWithoutReconnectTheLinkStaysDown() throws {
        let path = try makeSocketPath(self)
        let first = try backend(path, .server)
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.reconnect = false
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        first.stop()
        XCTAssertTrue(waitUntil { device.linkState != .up })
        let second = try backend(path, .server)
        defer { second.stop() }
        MonotonicClock.sleep(milliseconds: 300)
        XCTAssertNotEqual(device.linkState, .up)
        XCTAssertEqual(device.connectionCount, 1)
    }

    /// Frames accepted for transmission when the back-end vanished are counted as drops, and
    /// their buffers return to the pool.
    func testFramesInFlightWhenTheBackendVanishesAreCountedAsDrops() throws {
        let path = try makeSocketPath(self)
        var configuration = VhostUserBackend.Configuration(socketPath: path, mode: .loopback)
        configuration.idlePollsBeforeSleep = 1
        let backend = try VhostUserBackend(configuration: configuration)
        try backend.start()
        var deviceConfiguration = VirtioUserDevice.Configuration(socketPath: path)
        deviceConfiguration.reconnect = false
        let device = try VirtioUserDevice(configuration: deviceConfiguration)
        try device.start()
        // Fill the transmit ring without receiving: the loopback stops once the receive ring
        // is full, so frames stay in flight.
        let burst = PacketBurst(capacity: 32)
        var spins = 0
        while device.statistics.tx.ringFull == 0 && spins < 1_000_000 {
            device.allocate(into: burst, count: burst.space)
            device.transmit(burst)
            spins += 1
        }
        device.release(burst)
        backend.stop()
        XCTAssertTrue(waitUntil { device.linkState != .up })
        device.stop()
        let stats = device.statistics
        XCTAssertGreaterThan(stats.tx.drops, 0)
        XCTAssertLessThanOrEqual(stats.tx.drops, stats.tx.packets)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize)
    }
}
