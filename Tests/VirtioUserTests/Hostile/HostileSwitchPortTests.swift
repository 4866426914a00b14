import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A hostile front-end on one switch port: each broken ring closes that port's session only
/// (counted as a protocol error), and two well-behaved front-ends on the other ports keep
/// exchanging frames throughout.
final class HostileSwitchPortTests: XCTestCase {
    func testABrokenRingClosesOnlyItsPort() throws {
        let paths = try (0..<3).map { try makeSocketPath(self, name: "port\($0).sock") }
        let fabric = try VhostUserSwitch(configuration: .init(portPaths: paths))
        try fabric.start()
        defer { fabric.stop() }
        var configuration = VirtioUserDevice.Configuration(socketPath: paths[1])
        configuration.macAddress = MACAddress(0x02, 0, 0, 0, 0, 0x01)
        let a = try VirtioUserDevice(configuration: configuration)
        configuration.socketPath = paths[2]
        configuration.macAddress = MACAddress(0x02, 0, 0, 0, 0, 0x02)
        let b = try VirtioUserDevice(configuration: configuration)
        try a.start()
        try b.start()
        defer { a.stop(); b.stop() }
        XCTAssertTrue(waitUntil { fabric.statistics[1].isUp && fabric.statistics[2].isUp })

        var tried = 0
        for item in HostileFrontendTests.ringCases {
            let before = fabric.statistics[0].protocolErrors
            let peer = try HostileFrontend(connectingTo: paths[0])
            try peer.startEverything()
            try item.script(peer)
            // A broken receive ring is found when a frame is switched to it: A broadcasts one.
            XCTAssertEqual(send(from: a, destination: MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF), source: MACAddress(0x02, 0, 0, 0, 0, 0x01)), 1)
            XCTAssertTrue(peer.waitForHangUp(), "\(item.name): the switch kept the port's connection open")
            XCTAssertTrue(waitUntil { fabric.statistics[0].protocolErrors == before + 1 }, "\(item.name): not counted on port 0")
            // What reached A and B meanwhile (the broadcast; a frame the hostile front-end sent
            // before it broke its ring), then a frame each way: the others are untouched.
            drain(a)
            drain(b)
            XCTAssertEqual(exchange(from: a, to: b, destination: MACAddress(0x02, 0, 0, 0, 0, 0x02), source: MACAddress(0x02, 0, 0, 0, 0, 0x01)), 1, item.name)
            XCTAssertEqual(exchange(from: b, to: a, destination: MACAddress(0x02, 0, 0, 0, 0, 0x01), source: MACAddress(0x02, 0, 0, 0, 0, 0x02)), 1, item.name)
            tried += 1
        }
        XCTAssertGreaterThanOrEqual(tried, 10)
        XCTAssertEqual(fabric.statistics[1].protocolErrors + fabric.statistics[2].protocolErrors, 0)
        XCTAssertEqual(a.linkState, .up)
        XCTAssertEqual(b.linkState, .up)
    }

    /// A port whose call fds are blocking and full and whose kick fds are blocking and empty:
    /// the switch never sleeps on them, and the other ports go on exchanging frames.
    func testAPortsBlockingEventFdsStallNothing() throws {
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 3, configure: { $0.idlePollsBeforeSleep = 10 })
        defer { fabric.stop(); a.stop(); b.stop() }
        let peer = try HostileFrontend(connectingTo: paths[0])
        try peer.startEverything()
        XCTAssertTrue(waitUntil { fabric.statistics[0].isUp })
        for call in peer.calls.values { try makeBlocking(call, count: 0xFFFF_FFFF_FFFF_FFFE) }
        for kick in peer.kicks.values { try makeBlocking(kick, count: 0) }
        // A broadcast reaches the port (its call fd is signalled), and the switch sleeps and
        // drains kicks while idle.
        XCTAssertEqual(send(from: a, destination: MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF), source: MACAddress(0x02, 0, 0, 0, 0, 0x01)), 1)
        XCTAssertTrue(waitUntil { fabric.statistics[0].sent == 1 })
        MonotonicClock.sleep(milliseconds: 400)
        drain(b)
        XCTAssertEqual(exchange(from: a, to: b, destination: MACAddress(0x02, 0, 0, 0, 0, 0x02), source: MACAddress(0x02, 0, 0, 0, 0, 0x01)), 1)
        XCTAssertEqual(exchange(from: b, to: a, destination: MACAddress(0x02, 0, 0, 0, 0, 0x01), source: MACAddress(0x02, 0, 0, 0, 0, 0x02)), 1)
        XCTAssertTrue(VirtioFeatures(rawValue: try peer.get(.getFeatures)).contains(.version1))
    }
}
