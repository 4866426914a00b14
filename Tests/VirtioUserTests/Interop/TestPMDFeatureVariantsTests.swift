import Synchronization
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// DPDK's virtio-user against our back-end with its feature devargs switched: what gets
/// negotiated follows the devargs, and one burst circulates intact through our loopback each
/// time (every frame our back-end sees equals the one it saw a burst earlier).
final class TestPMDFeatureVariantsTests: XCTestCase {
    private func circulate(devargs: String, txpkts: String = "1000") throws -> (VirtioFeatures, BackendStatistics) {
        let path = try makeSocketPath(self)
        let digests = Mutex<[UInt64]>([])
        let backend = try startBackend(self, mode: .loopback) {
            $0.socketPath = path
            $0.frameObserver = { digest, _ in digests.withLock { if $0.count < 100_000 { $0.append(digest) } } }
        }
        var options = ["--forward-mode", "io", "--tx-first", "--multi-flow", "--txpkts", txpkts]
        if !devargs.isEmpty { options += ["--devargs", devargs] }
        let testpmd = try TestPMD(.virtioUser, socket: path, options)
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.framesReceived >= 50_000 }, "\(devargs): " + testpmd.output.suffix(1500))
        let totals = try testpmd.stop()
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        let stats = backend.statistics
        let features = backend.negotiations.first?.features ?? []
        print("interop: testpmd virtio-user \(devargs.isEmpty ? "(defaults)" : devargs) -> our loopback: features \(features); "
              + "testpmd TX \(totals.txPackets) RX \(totals.rxPackets); back-end received \(stats.framesReceived)")
        XCTAssertEqual(totals.txDropped + totals.rxDropped, 0, devargs)
        XCTAssertLessThanOrEqual(totals.txPackets - totals.rxPackets, 32, devargs)
        XCTAssertEqual(stats.drops + stats.protocolErrors, 0, "\(devargs): \(stats.lastError.map { "\($0)" } ?? "")")
        let seen = digests.withLock { $0 }
        var changed = 0
        for i in 32..<seen.count where seen[i] != seen[i - 32] { changed += 1 }
        XCTAssertEqual(changed, 0, "\(devargs): a frame changed on its way round")
        return (features, stats)
    }

    /// DPDK's defaults (in_order=1, mrg_rxbuf=1): both negotiated, with indirect descriptors.
    func testDefaultsNegotiateInOrderAndMergeableBuffers() throws {
        let (features, _) = try circulate(devargs: "")
        XCTAssertTrue(features.isSuperset(of: [.version1, .inOrder, .netMergeableRxBuffers, .ringIndirectDescriptors]), "\(features)")
        XCTAssertFalse(features.contains(.ringEventIndex), "DPDK's virtio-user never negotiates EVENT_IDX")
    }

    func testInOrderOff() throws {
        let (features, _) = try circulate(devargs: "in_order=0")
        XCTAssertFalse(features.contains(.inOrder), "\(features)")
    }

    /// packed_vq=1: DPDK's packed ring against our packed device half, with its defaults
    /// (in-order, mergeable buffers).
    func testPackedRing() throws {
        let (features, _) = try circulate(devargs: "packed_vq=1")
        XCTAssertTrue(features.isSuperset(of: [.ringPacked, .inOrder, .netMergeableRxBuffers]), "\(features)")
    }

    /// Packed, not in order, with jumbo frames: DPDK sends each as an indirect table (whose
    /// header entry it marks device-writable; see PackedRingDevice) and receives it merged.
    func testPackedRingJumboFramesOutOfOrderPath() throws {
        let (features, stats) = try circulate(devargs: "packed_vq=1,in_order=0", txpkts: "2048,2048,2048,2048,1024")
        XCTAssertTrue(features.contains(.ringPacked))
        XCTAssertFalse(features.contains(.inOrder))
        XCTAssertEqual(stats.bytesReceived, stats.framesReceived * 9216)
        XCTAssertGreaterThan(stats.indirectTables, 0, "DPDK's multi-segment frames arrive as indirect tables")
    }

    /// Packed and in order with jumbo frames: plain chains of six slots.
    func testPackedRingJumboFramesInOrder() throws {
        let (features, stats) = try circulate(devargs: "packed_vq=1,in_order=1", txpkts: "2048,2048,2048,2048,1024")
        XCTAssertTrue(features.isSuperset(of: [.ringPacked, .inOrder]), "\(features)")
        XCTAssertEqual(stats.bytesReceived, stats.framesReceived * 9216)
    }

    func testMergeableBuffersOff() throws {
        let (features, _) = try circulate(devargs: "mrg_rxbuf=0")
        XCTAssertFalse(features.contains(.netMergeableRxBuffers), "\(features)")
    }

    /// In-order with jumbo frames of five mbufs: DPDK's in-order path never uses indirect
    /// tables, so they come as plain chains, merged on the way back.
    func testInOrderWithJumboFrames() throws {
        let (features, stats) = try circulate(devargs: "in_order=1", txpkts: "2048,2048,2048,2048,1024")
        XCTAssertTrue(features.contains(.inOrder))
        XCTAssertEqual(stats.bytesReceived, stats.framesReceived * 9216)
    }
}
