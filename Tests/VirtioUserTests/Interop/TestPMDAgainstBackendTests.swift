import Synchronization
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// DPDK's own virtio-user (testpmd as the front-end) against our Swift back-end.
final class TestPMDAgainstBackendTests: XCTestCase {
    /// Collects the digests of the frames our back-end sees, in order.
    private final class Digests: Sendable {
        let values = Mutex<[UInt64]>([])
        func add(_ digest: UInt64) {
            values.withLock { if $0.count < 2_000_000 { $0.append(digest) } }
        }
    }

    /// testpmd io with --tx-first: one burst of 32 frames circulates testpmd → our loopback →
    /// testpmd. Every frame it sent comes back (TX - RX is at most the one burst in flight), and
    /// the frames stay intact: each frame our back-end sees equals the one it saw a burst ago.
    private func circulate(hugepages: Bool) throws {
        let path = try makeSocketPath(self)
        let digests = Digests()
        var configuration = VhostUserBackend.Configuration(socketPath: path, mode: .loopback)
        configuration.frameObserver = { digest, _ in digests.add(digest) }
        let backend = try VhostUserBackend(configuration: configuration)
        try backend.start()
        defer { backend.stop() }
        let testpmd = try TestPMD(.virtioUser, socket: path,
                                  ["--forward-mode", "io", "--tx-first", "--multi-flow", "--txpkts", "1000"] + (hugepages ? ["--hugepages"] : []))
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived >= 200_000 }, testpmd.output.suffix(1500).description)
        let totals = try testpmd.stop()
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })

        let stats = backend.statistics
        XCTAssertGreaterThanOrEqual(totals.txPackets, 200_000)
        XCTAssertEqual(totals.txDropped, 0)
        XCTAssertEqual(totals.rxDropped, 0)
        XCTAssertLessThanOrEqual(totals.txPackets - totals.rxPackets, 32, "every frame sent comes back but the burst in flight")
        XCTAssertEqual(stats.framesSent, stats.framesReceived, "loopback returns every frame")
        XCTAssertEqual(stats.drops, 0)
        XCTAssertEqual(stats.protocolErrors, 0, stats.lastError.map { "\($0)" } ?? "")
        XCTAssertLessThanOrEqual(totals.txPackets - stats.framesReceived, 32)

        let seen = digests.values.withLock { $0 }
        print("interop: testpmd virtio-user (\(hugepages ? "hugepages" : "--no-huge memfd")) io --tx-first -> our loopback: "
              + "testpmd TX \(totals.txPackets) RX \(totals.rxPackets) dropped \(totals.txDropped + totals.rxDropped); "
              + "back-end received \(stats.framesReceived) sent \(stats.framesSent); \(seen.count) frames digested, "
              + "\(Set(seen).count) distinct")
        XCTAssertGreaterThan(seen.count, 1000)
        var changed = 0
        for i in 32..<seen.count where seen[i] != seen[i - 32] { changed += 1 }
        XCTAssertEqual(changed, 0, "a frame changed on its way round")
        XCTAssertGreaterThan(Set(seen.prefix(32)).count, 1, "the circulating frames differ, so a mix-up would show")
        XCTAssertEqual(backend.negotiations.first?.features.contains(.version1), true)
    }

    func testIoTxFirstCirculatesIntactWithMemfdMemory() throws {
        try circulate(hugepages: false)
    }

    func testIoTxFirstCirculatesIntactOnHugepages() throws {
        try reserveHugepages(512, for: self)
        try circulate(hugepages: true)
    }

    /// testpmd txonly into our back-end (sink): every frame testpmd counts as sent arrives.
    private func txonly(hugepages: Bool) throws {
        let backend = try startBackend(self, mode: .sink)
        let path = backend.configuration.socketPath
        let testpmd = try TestPMD(.virtioUser, socket: path,
                                  ["--forward-mode", "txonly", "--txpkts", "64"] + (hugepages ? ["--hugepages"] : []))
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived >= 500_000 }, testpmd.output.suffix(1500).description)
        let totals = try testpmd.stop()
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        let stats = backend.statistics
        print("interop: testpmd virtio-user (\(hugepages ? "hugepages" : "--no-huge memfd")) txonly 64 B -> our sink: "
              + "testpmd TX \(totals.txPackets), back-end received \(stats.framesReceived)")
        // testpmd counts a frame when it is on the ring; we count it when we take it. The front-end
        // stops the rings when it quits, so at most a ring's worth may be left untaken.
        XCTAssertLessThanOrEqual(stats.framesReceived, totals.txPackets)
        XCTAssertLessThanOrEqual(totals.txPackets - stats.framesReceived, 256)
        XCTAssertEqual(stats.bytesReceived, stats.framesReceived * 64)
        XCTAssertEqual(stats.protocolErrors, 0, stats.lastError.map { "\($0)" } ?? "")
    }

    func testTxonlyIntoSinkWithMemfdMemory() throws {
        try txonly(hugepages: false)
    }

    func testTxonlyIntoSinkOnHugepages() throws {
        try reserveHugepages(512, for: self)
        try txonly(hugepages: true)
    }

    /// A back-end offering every protocol feature gets back only those we (and DPDK) implement.
    func testOurDeviceTakesOnlyTheProtocolFeaturesItImplements() throws {
        let backend = try startBackend(self) { $0.offeredProtocolFeatures = VhostUserProtocolFeatures(rawValue: 0x3_FFFF) }
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 11), total: 1000).intact, 1000)
        device.stop()
        XCTAssertTrue(waitUntil { backend.negotiations.count == 1 })
        XCTAssertEqual(backend.negotiations.first?.protocolFeatures, [.multiqueue, .replyAck, .mtu, .config, .status])
        XCTAssertEqual(backend.negotiations.first?.features, defaultFeaturesWithOurBackend)
    }
}
