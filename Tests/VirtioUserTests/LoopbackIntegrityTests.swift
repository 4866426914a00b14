import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Device ↔ Swift back-end in one process, over a real Unix socket and shared memfd memory.
final class LoopbackIntegrityTests: XCTestCase {
    /// 100,000 frames of random sizes 60…1514 and random content come back byte for byte, in
    /// order, with balanced counters and every buffer back in the pool.
    func testHundredThousandRandomFramesComeBackIntact() throws {
        let backend = try startBackend(self, mode: .loopback)
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(device.linkState, .up)

        let total: UInt64 = 100_000
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: 0xC0FFEE), total: total)
        XCTAssertEqual(result.sent, total)
        XCTAssertEqual(result.intact, total, "every frame must come back byte for byte")
        XCTAssertEqual(result.mismatched, 0)

        let stats = device.statistics
        XCTAssertEqual(stats.tx.packets, total)
        XCTAssertEqual(stats.rx.packets, total)
        XCTAssertEqual(stats.tx.bytes, stats.rx.bytes)
        XCTAssertEqual(stats.tx.errors + stats.rx.errors, 0)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), stats.poolSize, "every buffer is back in the pool")
        XCTAssertEqual(device.invalidReleases(), 0)
        let backendStats = backend.statistics
        XCTAssertEqual(backendStats.framesReceived, total)
        XCTAssertEqual(backendStats.framesSent, total)
        XCTAssertEqual(backendStats.drops, 0)
        XCTAssertEqual(backendStats.protocolErrors, 0)
    }

    /// With IN_ORDER and EVENT_IDX (off by default), including jumbo frames: intact, balanced.
    func testInOrderAndEventIndexCarryFramesIntact() throws {
        let backend = try startBackend(self, mode: .loopback)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.inOrder = true
        configuration.eventIndex = true
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.isSuperset(of: [.inOrder, .ringEventIndex]), "\(device.negotiatedFeatures)")
        let total: UInt64 = 30_000
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: 0x10, minimumLength: 60, maximumLength: 9216), total: total)
        XCTAssertEqual(result.intact, total)
        device.stop()
        let stats = device.statistics
        XCTAssertEqual(stats.tx.packets, stats.tx.completed + stats.tx.drops)
        XCTAssertEqual(stats.tx.errors + stats.rx.errors + stats.rx.drops, 0)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize)
    }

    /// Every queue size the device accepts carries traffic intact end to end.
    func testEveryQueueSizeCarriesTraffic() throws {
        let backend = try startBackend(self, mode: .loopback)
        let path = backend.configuration.socketPath
        var size = 64
        while size <= 32768 {
            var configuration = VirtioUserDevice.Configuration(socketPath: path)
            configuration.queueSize = size
            let device = try VirtioUserDevice(configuration: configuration)
            try device.start()
            // More frames than the ring holds, so every size wraps its ring at least twice.
            let total = UInt64(max(3000, 2 * size + 100))
            let result = runLoopbackStream(device: device, stream: FrameStream(seed: UInt64(size)), total: total)
            XCTAssertEqual(result.intact, total, "queue size \(size)")
            device.stop()
            XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "queue size \(size)")
            size *= 2
        }
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
    }

    /// Sink mode: the back-end consumes every frame and sends nothing back.
    func testSinkConsumesEveryFrame() throws {
        let backend = try startBackend(self, mode: .sink)
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        let burst = PacketBurst(capacity: 32)
        var sent = 0
        var spins = 0
        while sent < 50_000 && spins < 10_000_000 {
            let added = device.allocate(into: burst, count: 50_000 - sent - burst.count)
            for i in (burst.count - added)..<burst.count {
                var packet = burst[i]
                packet.length = 60
                burst[i] = packet
            }
            let n = device.transmit(burst)
            sent += n
            spins = n == 0 ? spins + 1 : 0
        }
        device.release(burst)
        XCTAssertEqual(sent, 50_000)
        XCTAssertEqual(device.receive(into: burst), 0)
        // The back-end works through the ring on its own thread: wait (bounded) until it has.
        XCTAssertTrue(waitUntil { backend.statistics.framesReceived == 50_000 })
        device.stop()
        XCTAssertEqual(backend.statistics.framesReceived, 50_000)
        XCTAssertEqual(backend.statistics.bytesReceived, 50_000 * 60)
        XCTAssertEqual(backend.statistics.framesSent, 0)
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize)
    }
}
