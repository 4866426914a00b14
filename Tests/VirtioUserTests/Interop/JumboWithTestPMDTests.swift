import Synchronization
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Jumbo frames with DPDK testpmd, both directions: chained transmit and mergeable receive
/// buffers (DPDK's default mrg_rxbuf=1) against the other implementation.
final class JumboWithTestPMDTests: XCTestCase {
    /// Our device through testpmd's vhost io forwarding: 100,000 frames of 60…9,216 bytes,
    /// each back intact (testpmd holds them as chained mbufs in between).
    func testOurJumboFramesThroughTestPMDVhost() throws {
        try ourJumboFrames(indirect: true)
    }

    /// The same with plain descriptor chains (indirect descriptors not negotiated).
    func testOurChainedJumboFramesThroughTestPMDVhost() throws {
        try ourJumboFrames(indirect: false)
    }

    private func ourJumboFrames(indirect: Bool) throws {
        let path = try makeSocketPath(self)
        let testpmd = try TestPMD(.vhost, socket: path, ["--forward-mode", "io"])
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.indirectDescriptors = indirect
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.negotiatedFeatures.contains(.ringIndirectDescriptors), indirect)
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMergeableRxBuffers), "\(device.negotiatedFeatures)")
        let total: UInt64 = 100_000
        let result = runLoopbackStream(
            device: device, stream: FrameStream(seed: 0x1B00, minimumLength: 60, maximumLength: 9216),
            total: total, window: 32)
        device.stop()
        let totals = try testpmd.stop()
        print("interop: our device, jumbo 60…9216 B (\(indirect ? "indirect tables" : "chains")) -> testpmd vhost io: sent \(result.sent), intact \(result.intact); "
              + "testpmd RX \(totals.rxPackets) TX \(totals.txPackets) dropped \(totals.rxDropped + totals.txDropped)")
        XCTAssertEqual(result.sent, total, testpmd.output.suffix(1500).description)
        XCTAssertEqual(result.intact, total)
        XCTAssertEqual(totals, TestPMD.Totals(rxPackets: total, rxDropped: 0, txPackets: total, txDropped: 0))
        let stats = device.statistics
        XCTAssertEqual(stats.tx.drops + stats.rx.drops + stats.tx.errors + stats.rx.errors, 0)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize)
    }

    /// testpmd's virtio-user sends 9,216-byte frames in five segments (--txpkts) as indirect
    /// tables (in_order=0: DPDK's in-order path never uses them; TestPMDFeatureVariantsTests
    /// covers in-order jumbo frames), and receives them back merged over its 2 KiB buffers:
    /// one burst circulates through our loopback, unchanged.
    func testTestPMDJumboFramesCirculateThroughOurBackend() throws {
        let path = try makeSocketPath(self)
        let digests = Mutex<[UInt64]>([])
        let lengths = Mutex<Set<Int>>([])
        let backend = try startBackend(self, mode: .loopback) {
            $0.socketPath = path
            $0.frameObserver = { digest, length in
                digests.withLock { if $0.count < 200_000 { $0.append(digest) } }
                lengths.withLock { _ = $0.insert(length) }
            }
        }
        let testpmd = try TestPMD(.virtioUser, socket: backend.configuration.socketPath,
                                  ["--forward-mode", "io", "--tx-first", "--multi-flow", "--txpkts", "2048,2048,2048,2048,1024", "--devargs", "in_order=0"])
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived >= 50_000 }, testpmd.output.suffix(1500).description)
        let totals = try testpmd.stop()
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        let stats = backend.statistics
        print("interop: testpmd virtio-user io --tx-first 9216 B in 5 segments -> our loopback: testpmd TX \(totals.txPackets) RX \(totals.rxPackets); "
              + "back-end received \(stats.framesReceived) sent \(stats.framesSent), frame lengths \(lengths.withLock { $0.sorted() })")
        XCTAssertEqual(backend.negotiations.first?.features.contains(.netMergeableRxBuffers), true)
        // DPDK sends a frame of several mbufs through an indirect table when it may.
        XCTAssertEqual(backend.negotiations.first?.features.contains(.ringIndirectDescriptors), true)
        XCTAssertGreaterThan(stats.indirectTables, 0, "testpmd's chained frames came as indirect tables")
        XCTAssertEqual(lengths.withLock { $0 }, [9216], "every frame is 9,216 bytes")
        XCTAssertEqual(stats.bytesReceived, stats.framesReceived * 9216)
        XCTAssertEqual(stats.drops, 0)
        XCTAssertEqual(stats.protocolErrors, 0, stats.lastError.map { "\($0)" } ?? "")
        XCTAssertEqual(totals.txDropped + totals.rxDropped, 0)
        XCTAssertLessThanOrEqual(totals.txPackets - totals.rxPackets, 32)
        let seen = digests.withLock { $0 }
        var changed = 0
        for i in 32..<seen.count where seen[i] != seen[i - 32] { changed += 1 }
        XCTAssertEqual(changed, 0, "a frame changed on its way round")
    }
}
