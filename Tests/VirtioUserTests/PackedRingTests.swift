import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Packed virtqueues (VIRTIO_F_RING_PACKED) end to end: our device's packed driver half
/// against our back-end's packed device half, through the same API as split rings.
final class PackedRingTests: XCTestCase {
    private func packedDevice(
        _ backend: VhostUserBackend, _ adjust: (inout VirtioUserDevice.Configuration) -> Void = { _ in }
    ) throws -> VirtioUserDevice {
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.packedRing = true
        adjust(&configuration)
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        return device
    }

    /// Checks the counters balance and every buffer is home, after `total` frames each way.
    private func assertBalanced(_ device: VirtioUserDevice, _ backend: VhostUserBackend, total: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        let stats = device.statistics
        XCTAssertEqual(stats.tx.packets, total, file: file, line: line)
        XCTAssertEqual(stats.rx.packets, total, file: file, line: line)
        XCTAssertEqual(stats.tx.bytes, stats.rx.bytes, file: file, line: line)
        XCTAssertEqual(stats.tx.packets, stats.tx.completed + stats.tx.drops, file: file, line: line)
        XCTAssertEqual(stats.tx.drops + stats.rx.drops + stats.tx.errors + stats.rx.errors, 0, file: file, line: line)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize, "every buffer back in the pool", file: file, line: line)
        XCTAssertEqual(device.invalidReleases(), 0, file: file, line: line)
        XCTAssertEqual(backend.statistics.framesSent, total, file: file, line: line)
        XCTAssertEqual(backend.statistics.protocolErrors + backend.statistics.drops, 0, file: file, line: line)
    }

    /// 200,000 frames of 60…1,514 bytes: the rings wrap hundreds of times (both wrap
    /// counters flip), and every frame comes back byte for byte.
    func testFramesRoundTripIntactAcrossManyWraps() throws {
        let backend = try startBackend(self, mode: .loopback)
        let device = try packedDevice(backend)
        XCTAssertTrue(device.negotiatedFeatures.contains(.ringPacked), "\(device.negotiatedFeatures)")
        XCTAssertFalse(device.negotiatedFeatures.contains(.inOrder), "IN_ORDER is not used with packed rings")
        let total: UInt64 = 200_000
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: 0xFACE), total: total)
        XCTAssertEqual(result.sent, total)
        XCTAssertEqual(result.intact, total)
        device.stop()
        assertBalanced(device, backend, total: total)
        // The rings were described as packed: SET_VRING_BASE carried wrap counter 1. (The
        // back-end records a negotiation when the session ends, on its own thread.)
        XCTAssertTrue(waitUntil { backend.negotiations.count == 1 })
        XCTAssertEqual(backend.negotiations.first?.features.contains(.ringPacked), true)
    }

    /// Jumbo frames (60…9,216 bytes): out as indirect tables, or as chains of consecutive
    /// descriptors; back over mergeable buffers.
    func testJumboFramesAsIndirectTables() throws {
        try jumboFrames(indirect: true)
    }

    func testJumboFramesAsChains() throws {
        try jumboFrames(indirect: false)
    }

    private func jumboFrames(indirect: Bool) throws {
        let backend = try startBackend(self, mode: .loopback)
        let device = try packedDevice(backend) { $0.indirectDescriptors = indirect }
        XCTAssertTrue(device.negotiatedFeatures.isSuperset(of: [.ringPacked, .netMergeableRxBuffers]))
        let total: UInt64 = 20_000
        let result = runLoopbackStream(
            device: device, stream: FrameStream(seed: 0x9216, minimumLength: 60, maximumLength: 9216), total: total)
        XCTAssertEqual(result.intact, total)
        device.stop()
        assertBalanced(device, backend, total: total)
        if indirect {
            XCTAssertGreaterThan(backend.statistics.indirectTables, 0)
        } else {
            XCTAssertEqual(backend.statistics.indirectTables, 0)
        }
    }

    /// Two queue pairs, each on its own thread.
    func testTwoQueuePairs() throws {
        let backend = try startBackend(self, mode: .loopback)
        let device = try packedDevice(backend) { $0.queuePairs = 2 }
        let total: UInt64 = 50_000
        let results = try runLoopbackStreamsOnEveryPair(device: device, total: total) { FrameStream(seed: 0xBA5E + UInt64($0)) }
        for (queue, result) in results.enumerated() { XCTAssertEqual(result.intact, total, "pair \(queue)") }
        device.stop()
        XCTAssertEqual(device.statistics.rx.packets, 2 * total)
        XCTAssertEqual(backend.statistics.framesSentByQueuePair.prefix(2), [total, total])
    }

    /// Interrupt mode over packed rings, with the event areas' flags and with EVENT_IDX: the
    /// back-end sleeps between rounds, our kick wakes it, its notification wakes our receive.
    func testBlockingReceiveWakesOnNotifications() throws {
        for eventIndex in [false, true] {
            let backend = try startBackend(self) { $0.idlePollsBeforeSleep = 100 }
            let device = try packedDevice(backend) { $0.eventIndex = eventIndex }
            XCTAssertEqual(device.negotiatedFeatures.contains(.ringEventIndex), eventIndex)
            let stream = FrameStream(seed: 0x1D1E)
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 8)
            defer { scratch.deallocate() }
            let burst = PacketBurst(capacity: 32)
            var next: UInt64 = 0
            for _ in 0..<10 {
                MonotonicClock.sleep(milliseconds: 5)
                device.allocate(into: burst, count: 32)
                for i in 0..<burst.count {
                    var packet = burst[i]
                    packet.length = stream.write(next + UInt64(i), to: packet.data)
                    burst[i] = packet
                }
                XCTAssertEqual(device.transmit(burst), 32)
                var received = 0
                while received < 32 {
                    let n = device.receive(into: burst, timeoutMilliseconds: 10_000)
                    XCTAssertGreaterThan(n, 0, "event index \(eventIndex): frames should end the wait")
                    guard n > 0 else { return }
                    for i in 0..<n {
                        XCTAssertTrue(stream.matches(next, UnsafeRawBufferPointer(burst[i].bytes), scratch: scratch))
                        next += 1
                    }
                    received += n
                    device.release(burst)
                }
            }
            XCTAssertEqual(device.statistics.rx.packets, 320)
            XCTAssertGreaterThan(device.statistics.rx.wakeups, 0, "event index \(eventIndex)")
            device.stop()
        }
    }

    /// A back-end without RING_PACKED: the device falls back to split rings.
    func testFallsBackToSplitRings() throws {
        let backend = try startBackend(self) { $0.offeredFeatures.remove(.ringPacked) }
        let device = try packedDevice(backend)
        XCTAssertFalse(device.negotiatedFeatures.contains(.ringPacked))
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 3), total: 10_000).intact, 10_000)
        device.stop()
        assertBalanced(device, backend, total: 10_000)
    }

    /// A new session after the back-end restarts starts the packed rings afresh (slot 0,
    /// wrap counters 1), with every buffer of the old session reclaimed.
    func testReconnectStartsTheRingsAfresh() throws {
        let path = try makeSocketPath(self)
        var backendConfiguration = VhostUserBackend.Configuration(socketPath: path, mode: .loopback)
        backendConfiguration.idlePollsBeforeSleep = 1000
        var backend = try VhostUserBackend(configuration: backendConfiguration)
        try backend.start()
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.packedRing = true
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        defer { device.stop() }
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 1), total: 1000).intact, 1000)
        backend.stop()
        XCTAssertTrue(waitUntil { device.linkState != .up }, "link must go down")
        backend = try VhostUserBackend(configuration: backendConfiguration)
        try backend.start()
        defer { backend.stop() }
        XCTAssertTrue(waitUntil(seconds: 20) { device.linkState == .up }, "the device reconnects")
        XCTAssertTrue(device.negotiatedFeatures.contains(.ringPacked))
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 2), total: 1000).intact, 1000)
    }
}
