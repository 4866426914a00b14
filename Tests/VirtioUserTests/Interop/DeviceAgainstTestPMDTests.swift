import VirtioCore
import VhostUser
import VirtioUser
import XCTest

/// Our device against DPDK testpmd's vhost PMD (the back-end a user's host runs): 1,000,000
/// frames of random sizes 64…1518 go out and come back, each checked byte for byte.
final class DeviceAgainstTestPMDTests: XCTestCase {
    static let frames: UInt64 = 1_000_000

    private func run(forwardMode: String, memory: MemoryBacking, poolSize: Int? = nil, nonDefaultOrdering: Bool = false) throws {
        let path = try makeSocketPath(self)
        let testpmd = try TestPMD(.vhost, socket: path, ["--forward-mode", forwardMode])
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        // The defaults (IN_ORDER on, EVENT_IDX off), or both the other way round.
        configuration.inOrder = !nonDefaultOrdering
        configuration.eventIndex = nonDefaultOrdering
        configuration.memory = memory
        configuration.fallbackToNormalPages = false
        configuration.poolSize = poolSize
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.linkState, .up)
        let optional: VirtioFeatures = nonDefaultOrdering ? [.ringEventIndex] : [.inOrder]
        XCTAssertTrue(device.negotiatedFeatures.isSuperset(of: optional.union([.netMergeableRxBuffers, .ringIndirectDescriptors])),
                      "DPDK's vhost offers these and we take them: \(device.negotiatedFeatures)")
        XCTAssertEqual(device.negotiatedFeatures.contains(.inOrder), !nonDefaultOrdering)
        XCTAssertEqual(device.negotiatedFeatures.contains(.ringEventIndex), nonDefaultOrdering)

        // At most 128 frames in flight: testpmd drops (rather than waits) when our receive ring
        // is full, and this run is about integrity, not speed.
        let result = runLoopbackStream(
            device: device, stream: FrameStream(seed: 0xD9D4, minimumLength: 64, maximumLength: 1518),
            total: Self.frames, window: 128, macSwapped: forwardMode == "macswap")
        device.stop()
        let totals = try testpmd.stop()
        print("interop: our device (\(device.memoryBacking), \(device.sharedMemoryBytes >> 20) MiB) -> testpmd vhost \(forwardMode): "
              + "sent \(result.sent), received \(result.intact + result.mismatched), intact \(result.intact); "
              + "testpmd RX \(totals.rxPackets) TX \(totals.txPackets) dropped \(totals.rxDropped + totals.txDropped)")

        XCTAssertEqual(result.sent, Self.frames, testpmd.output.suffix(1500).description)
        XCTAssertEqual(result.intact, Self.frames, "frames back intact through testpmd \(forwardMode)")
        XCTAssertEqual(result.mismatched, 0)
        XCTAssertEqual(totals, TestPMD.Totals(rxPackets: Self.frames, rxDropped: 0, txPackets: Self.frames, txDropped: 0))
        let stats = device.statistics
        XCTAssertEqual(stats.tx.packets, Self.frames)
        XCTAssertEqual(stats.rx.packets, Self.frames)
        XCTAssertEqual(stats.tx.drops + stats.rx.drops + stats.tx.errors + stats.rx.errors, 0)
        XCTAssertEqual(device.availableBuffers(), stats.poolSize)
    }

    /// DPDK's vhost offers VIRTIO_NET_F_MTU and NET_MTU but no config space (no CONFIG, MAC or
    /// STATUS): our MTU is announced with NET_SET_MTU and acknowledged (REPLY_ACK), nothing is
    /// read with GET_CONFIG (DPDK would close the connection), and frames flow.
    func testMTUIsAnnouncedToTestPMDVhostAndNoConfigIsRead() throws {
        let path = try makeSocketPath(self)
        let testpmd = try TestPMD(.vhost, socket: path, ["--forward-mode", "io"])
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.mtu = 9000
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMTU), "\(device.negotiatedFeatures)")
        XCTAssertTrue(device.negotiatedFeatures.isDisjoint(with: [.netMAC, .netStatus]))
        XCTAssertTrue(device.protocolFeatures.contains(.mtu))
        XCTAssertFalse(device.protocolFeatures.contains(.config))
        XCTAssertTrue(device.sentRequests.contains("NET_SET_MTU"), "\(device.sentRequests)")
        XCTAssertFalse(device.sentRequests.contains("GET_CONFIG"))
        XCTAssertEqual(device.mtu, 9000)
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: 0x3707), total: 10_000, window: 128)
        XCTAssertEqual(result.intact, 10_000)
        XCTAssertEqual(device.linkState, .up)
        device.stop()
        _ = try testpmd.stop()
    }

    /// Interrupt mode against DPDK's vhost, with VIRTIO_RING_F_EVENT_IDX (which DPDK's own
    /// virtio-user never negotiates): each round of frames wakes our sleeping receive through
    /// the call eventfd, and every frame comes back intact.
    func testInterruptModeWithEventIndexAgainstTestPMDVhost() throws {
        let path = try makeSocketPath(self)
        let testpmd = try TestPMD(.vhost, socket: path, ["--forward-mode", "io"])
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.eventIndex = true
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.contains(.ringEventIndex), "\(device.negotiatedFeatures)")
        let stream = FrameStream(seed: 0xE1D)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 8)
        defer { scratch.deallocate() }
        let tx = PacketBurst(capacity: 32)
        let rx = PacketBurst(capacity: 32)
        var sent: UInt64 = 0
        var received: UInt64 = 0
        var intact: UInt64 = 0
        for _ in 0..<200 {
            device.allocate(into: tx, count: 32)
            for i in 0..<tx.count {
                var packet = tx[i]
                packet.length = stream.write(sent + UInt64(i), to: packet.data)
                tx[i] = packet
            }
            sent += UInt64(device.transmit(tx))
            while received < sent {
                guard device.receive(into: rx, timeoutMilliseconds: 5000) > 0 else { break }
                for i in 0..<rx.count {
                    if stream.matches(received, UnsafeRawBufferPointer(rx[i].bytes), scratch: scratch) { intact += 1 }
                    received += 1
                }
                device.release(rx)
            }
        }
        device.stop()
        let totals = try testpmd.stop()
        XCTAssertEqual(sent, 6400, testpmd.output.suffix(1500).description)
        XCTAssertEqual(intact, sent, "every frame back intact, each round woken by the call eventfd")
        XCTAssertEqual(totals.txPackets, sent)
        let wakeups = device.statistics.rx.wakeups
        print("interop: interrupt mode against testpmd vhost: \(sent) frames, \(wakeups) waits ended by DPDK's call notification")
        XCTAssertGreaterThan(wakeups, 0, "DPDK's vhost signalled our call eventfd")
    }

    /// Offloads against DPDK's vhost: CSUM, GUEST_CSUM and GUEST_TSO4/6 are negotiated when we
    /// ask (HOST_TSO only with net_vhost's tso=1, which testpmd.sh does not set). DPDK acts on
    /// our checksum requests: these frames are not IP, so its vhost computes the checksum in
    /// software where our header says (lib/vhost `vhost_dequeue_offload`), and they come back
    /// with only those two bytes changed, to a sum that verifies.
    func testOffloadsAreNegotiatedWithTestPMDVhost() throws {
        let path = try makeSocketPath(self)
        let testpmd = try TestPMD(.vhost, socket: path, ["--forward-mode", "io"])
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.offloads = [.transmitChecksum, .receiveChecksum, .transmitSegmentation4, .receiveSegmentation4, .receiveSegmentation6]
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        let features = device.negotiatedFeatures
        XCTAssertTrue(features.isSuperset(of: [.netCsum, .netGuestCsum, .netGuestTSO4, .netGuestTSO6]), "\(features)")
        XCTAssertFalse(features.contains(.netHostTSO4), "net_vhost offers HOST_TSO only with tso=1")
        let tx = PacketBurst(capacity: 32)
        let rx = PacketBurst(capacity: 32)
        device.allocate(into: tx, count: 32)
        for i in 0..<32 {
            var packet = tx[i]
            packet.length = 100
            for b in 0..<100 { packet.data.storeBytes(of: UInt8(truncatingIfNeeded: b &+ i), toByteOffset: b, as: UInt8.self) }
            packet.setOffload(VirtioNetOffload(flags: VirtioNetOffload.needsChecksum, checksumStart: 34, checksumOffset: 6))
            tx[i] = packet
        }
        XCTAssertEqual(device.transmit(tx), 32)
        var back = 0
        var intact = 0
        _ = waitUntil {
            device.receive(into: rx)
            for i in 0..<rx.count {
                let bytes = rx[i].bytes
                let unchanged = bytes.count == 100 && (0..<100).allSatisfy { $0 == 40 || $0 == 41 || bytes[$0] == UInt8(truncatingIfNeeded: $0 &+ back) }
                // Ones' complement sum of bytes 34… with the filled-in field, plus what the
                // field held before (the pseudo-header sum, for a real frame): all ones.
                var sum = UInt32(UInt8(truncatingIfNeeded: 40 &+ back)) << 8 | UInt32(UInt8(truncatingIfNeeded: 41 &+ back))
                var k = 34
                while k + 1 < bytes.count { sum += UInt32(bytes[k]) << 8 | UInt32(bytes[k + 1]); k += 2 }
                while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
                if unchanged && sum == 0xFFFF { intact += 1 }
                back += 1
            }
            device.release(rx)
            return back >= 32
        }
        device.stop()
        let totals = try testpmd.stop()
        XCTAssertEqual(back, 32, testpmd.output.suffix(1500).description)
        XCTAssertEqual(intact, 32)
        XCTAssertEqual(totals.rxPackets, 32)
        XCTAssertEqual(device.statistics.tx.drops, 0)
    }

    /// (a) memfd memory, testpmd --no-huge, io forwarding.
    func testIoForwardingWithMemfdMemory() throws {
        try run(forwardMode: "io", memory: .memfd)
    }

    /// The same with the ordering features the other way round, both of which DPDK's vhost
    /// offers: EVENT_IDX on (event-index notifications) and IN_ORDER off (completions read entry
    /// by entry, descriptors from the free stack), over 1,000,000 frames.
    func testIoForwardingWithEventIndexAndWithoutInOrder() throws {
        try run(forwardMode: "io", memory: .memfd, nonDefaultOrdering: true)
    }

    /// (a) memfd memory, testpmd --no-huge, macswap: every frame comes back with its MACs swapped.
    func testMacswapWithMemfdMemory() throws {
        try run(forwardMode: "macswap", memory: .memfd)
    }

    /// (b) our memory on 2 MiB hugepages, more than the 8 that DPDK's guide names as its limit,
    /// still in one region: io and macswap.
    func testIoForwardingWithMoreThanEightHugepages() throws {
        try runOnManyHugepages(forwardMode: "io")
    }

    func testMacswapWithMoreThanEightHugepages() throws {
        try runOnManyHugepages(forwardMode: "macswap")
    }

    private func runOnManyHugepages(forwardMode: String) throws {
        try reserveHugepages(64, for: self)
        // 8192 buffers: about 18 MiB of shared memory, i.e. 9 or more hugepages.
        let path = try makeSocketPath(self)
        var probe = VirtioUserDevice.Configuration(socketPath: path)
        probe.memory = .hugepages2M
        probe.fallbackToNormalPages = false
        probe.poolSize = 8192
        let device = try VirtioUserDevice(configuration: probe)
        XCTAssertEqual(device.memoryBacking, .hugepages2M)
        XCTAssertGreaterThan(device.sharedMemoryBytes / (2 << 20), 8, "the region must span more than 8 hugepages")
        try run(forwardMode: forwardMode, memory: .hugepages2M, poolSize: 8192)
    }
}
