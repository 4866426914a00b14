import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// MAC, MTU and link status through the API (VIRTIO_NET_F_MAC, _MTU, _STATUS), read from our
/// back-end's config space with GET_CONFIG and announced with NET_SET_MTU.
final class NetConfigTests: XCTestCase {
    func testDeviceWithoutAMACAdoptsTheBackendsMAC() throws {
        let assigned = MACAddress(0x02, 0x11, 0x22, 0x33, 0x44, 0x55)
        let backend = try startBackend(self) { $0.macAddress = assigned }
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMAC))
        XCTAssertEqual(device.macAddress, assigned)
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 1), total: 1000).intact, 1000)
    }

    func testAConfiguredMACWinsAndMACIsNotNegotiated() throws {
        let backend = try startBackend(self) { $0.macAddress = MACAddress(0x02, 0x11, 0x22, 0x33, 0x44, 0x55) }
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        let ours = MACAddress(0x02, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE)
        configuration.macAddress = ours
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertFalse(device.negotiatedFeatures.contains(.netMAC))
        XCTAssertEqual(device.macAddress, ours)
    }

    func testAMulticastMACFromTheBackendIsRefused() throws {
        let backend = try startBackend(self) { $0.macAddress = MACAddress(0x01, 0, 0x5E, 0, 0, 1) }
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.reconnect = false
        let device = try VirtioUserDevice(configuration: configuration)
        XCTAssertThrowsError(try device.start()) { error in
            XCTAssertEqual(error as? VirtioError, .negotiation(.invalidMACAddress(MACAddress(0x01, 0, 0x5E, 0, 0, 1))))
        }
    }

    func testOurMTUIsAnnouncedToTheBackend() throws {
        let backend = try startBackend(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.mtu = 9000
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.contains(.netMTU))
        XCTAssertEqual(device.mtu, 9000)
        XCTAssertTrue(device.sentRequests.contains("NET_SET_MTU"), "\(device.sentRequests)")
        device.stop()
        XCTAssertTrue(waitUntil { backend.negotiations.count == 1 })
        XCTAssertEqual(backend.negotiations.first?.mtu, 9000)
    }

    func testWithoutAnMTUOfItsOwnTheDeviceTakesTheBackends() throws {
        let backend = try startBackend(self) { $0.mtu = 4000 }
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertEqual(device.mtu, 4000)
        XCTAssertFalse(device.sentRequests.contains("NET_SET_MTU"))
    }

    func testAnMTUOutOfRangeIsRefusedAtCreation() {
        for bad in [0, 67, 65536] {
            var configuration = VirtioUserDevice.Configuration(socketPath: "/nonexistent")
            configuration.mtu = bad
            XCTAssertThrowsError(try VirtioUserDevice(configuration: configuration), "\(bad)")
        }
    }

    /// The back-end takes its port down and up again: the device's link state follows, while
    /// the session stays.
    func testLinkStatusFollowsTheBackend() throws {
        let backend = try startBackend(self)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.contains(.netStatus))
        XCTAssertEqual(device.linkState, .up)
        backend.setLinkUp(false)
        XCTAssertEqual(device.linkState, .down(reason: .backEndReportsLinkDown))
        backend.setLinkUp(true)
        XCTAssertEqual(device.linkState, .up)
        XCTAssertEqual(device.connectionCount, 1, "the same session throughout")
    }

    /// A back-end without the CONFIG protocol feature (like DPDK's vhost): no GET_CONFIG, no
    /// MAC or STATUS negotiated, our own MAC and the default MTU.
    func testWithoutConfigSpaceNothingIsReadFromIt() throws {
        let backend = try startBackend(self) {
            $0.macAddress = MACAddress(0x02, 0x11, 0x22, 0x33, 0x44, 0x55)
            $0.offeredProtocolFeatures.remove(.config)
        }
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertTrue(device.negotiatedFeatures.isDisjoint(with: [.netMAC, .netStatus, .netMTU]), "\(device.negotiatedFeatures)")
        XCTAssertNotEqual(device.macAddress, MACAddress(0x02, 0x11, 0x22, 0x33, 0x44, 0x55))
        XCTAssertEqual(device.mtu, 1500)
        XCTAssertFalse(device.sentRequests.contains("GET_CONFIG"))
    }
}
