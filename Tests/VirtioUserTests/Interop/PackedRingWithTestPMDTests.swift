import VirtioCore
import VhostUser
import VirtioUser
import XCTest

/// Our device's packed rings against DPDK testpmd's vhost PMD, which serves packed rings when
/// asked (VIRTIO_F_RING_PACKED). DPDK's virtio-user with packed_vq=1 against our back-end is in
/// TestPMDFeatureVariantsTests.
final class PackedRingWithTestPMDTests: XCTestCase {
    private func run(
        frames: UInt64, minimumLength: Int, maximumLength: Int, window: Int,
        _ adjust: (inout VirtioUserDevice.Configuration) -> Void = { _ in }
    ) throws {
        let path = try makeSocketPath(self)
        let testpmd = try TestPMD(.vhost, socket: path, ["--forward-mode", "io"])
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.packedRing = true
        adjust(&configuration)
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.linkState, .up)
        XCTAssertTrue(device.negotiatedFeatures.isSuperset(of: [.ringPacked, .netMergeableRxBuffers]), "\(device.negotiatedFeatures)")
        let result = runLoopbackStream(
            device: device, stream: FrameStream(seed: 0xDAC4, minimumLength: minimumLength, maximumLength: maximumLength),
            total: frames, window: window)
        device.stop()
        let totals = try testpmd.stop()
        print("interop: our device, packed rings (\(device.negotiatedFeatures)), \(minimumLength)…\(maximumLength) B -> testpmd vhost io: "
              + "sent \(result.sent), intact \(result.intact); testpmd RX \(totals.rxPackets) TX \(totals.txPackets) "
              + "dropped \(totals.rxDropped + totals.txDropped)")
        XCTAssertEqual(result.sent, frames, testpmd.output.suffix(1500).description)
        XCTAssertEqual(result.intact, frames, "every frame back intact through DPDK's packed vhost")
        XCTAssertEqual(totals, TestPMD.Totals(rxPackets: frames, rxDropped: 0, txPackets: frames, txDropped: 0))
        let stats = device.statistics
        XCTAssertEqual(stats.tx.packets, frames)
        XCTAssertEqual(stats.rx.packets, frames)
        XCTAssertEqual(stats.tx.drops + stats.rx.drops + stats.tx.errors + stats.rx.errors, 0)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize)
    }

    /// 500,000 frames of 64…1,518 bytes.
    func testFramesThroughTestPMDVhostPacked() throws {
        try run(frames: 500_000, minimumLength: 64, maximumLength: 1518, window: 128)
    }

    /// Jumbo frames: out as indirect tables, back over mergeable buffers.
    func testJumboFramesAsIndirectTablesThroughTestPMDVhostPacked() throws {
        try run(frames: 50_000, minimumLength: 60, maximumLength: 9216, window: 32)
    }

    /// Jumbo frames as chains of consecutive descriptors, with EVENT_IDX (DPDK's vhost
    /// offers it; the device event area then asks for kicks at one descriptor).
    func testJumboFramesAsChainsWithEventIndexThroughTestPMDVhostPacked() throws {
        try run(frames: 50_000, minimumLength: 60, maximumLength: 9216, window: 32) {
            $0.indirectDescriptors = false
            $0.eventIndex = true
        }
    }
}
