import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Switch ports are tenants that do not trust each other: none can take another's address,
/// crowd others out of the address table, or hold the others' traffic hostage by posting no
/// receive buffers. Devices A (…:01) and B (…:02) on ports 1 and 2 are the bystanders; port 0
/// is the hostile one.
final class SwitchIsolationTests: XCTestCase {
    let macA = MACAddress(0x02, 0, 0, 0, 0, 0x01)
    let macB = MACAddress(0x02, 0, 0, 0, 0, 0x02)
    let macC = MACAddress(0x02, 0, 0, 0, 0, 0x0C)

    /// C on port 0, up.
    private func startC(_ fabric: VhostUserSwitch, _ path: String) throws -> VirtioUserDevice {
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.macAddress = macC
        let c = try VirtioUserDevice(configuration: configuration)
        try c.start()
        XCTAssertTrue(waitUntil { fabric.statistics[0].isUp })
        return c
    }

    func testAPortCannotTakeOverAnAddressLearnedOnAnother() throws {
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 3)
        defer { fabric.stop(); a.stop(); b.stop() }
        let c = try startC(fabric, paths[0])
        defer { c.stop() }
        XCTAssertTrue(exchangeBothWays(a, b))
        drain(c)
        // C claims A's address: refused and counted, forwarded nowhere.
        XCTAssertEqual(send(from: c, destination: macB, source: macA), 1)
        XCTAssertTrue(waitUntil { fabric.statistics[0].spoofed == 1 })
        XCTAssertEqual(drain(b), 0)
        // B's frames for A still reach A, and C sees none of them.
        XCTAssertEqual(exchange(from: b, to: a, destination: macA, source: macB), 1)
        XCTAssertEqual(drain(c), 0)
        // Once A's session ends the address is free: C may now use it.
        a.stop()
        XCTAssertTrue(waitUntil { !fabric.statistics[1].isUp })
        XCTAssertEqual(send(from: c, destination: macB, source: macA), 1)
        XCTAssertTrue(waitUntil { drain(b) == 1 })
        XCTAssertEqual(fabric.statistics[0].spoofed, 1)
    }

    func testAPortCannotFillTheAddressTableForOthers() throws {
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 3)
        defer { fabric.stop(); a.stop(); b.stop() }
        let c = try startC(fabric, paths[0])
        defer { c.stop() }
        // C's own address first, then 5,000 more sources, every frame sent to C itself (so
        // nothing is copied anywhere): more than the old table's 4,096 entries.
        XCTAssertEqual(send(from: c, destination: macC, source: macC), 1)
        let burst = PacketBurst(capacity: 32)
        var sent = 0
        while sent < 5000 {
            fillWithFrames(burst, from: c)
            for i in 0..<burst.count {
                let packet = burst[i]
                macC.write(to: packet.data)
                MACAddress(0x02, 0, 0, 1, UInt8((sent + i) >> 8), UInt8((sent + i) & 0xFF)).write(to: packet.data + 6)
                burst[i] = packet
            }
            sent += c.transmit(burst)
        }
        c.release(burst)
        XCTAssertTrue(waitUntil { fabric.statistics[0].received == UInt64(sent + 1) }, "\(fabric.statistics[0])")
        XCTAssertEqual(fabric.learnedAddresses, fabric.configuration.addressesPerPort)
        // A and B can still be learned (A's first frame, for a B not yet learned, is flooded),
        // so then their frames go to each other only, never to C.
        XCTAssertTrue(exchangeBothWays(a, b))
        drain(c)
        XCTAssertTrue(exchangeBothWays(a, b))
        XCTAssertEqual(drain(c), 0)
        XCTAssertEqual(fabric.learnedAddresses, fabric.configuration.addressesPerPort + 2)
    }

    func testLearnedAddressesAgeOut() throws {
        let (fabric, a, b, _) = try startSwitchWithTwoDevices(ports: 3) { $0.addressAgeingMilliseconds = 200 }
        defer { fabric.stop(); a.stop(); b.stop() }
        XCTAssertTrue(exchangeBothWays(a, b))
        XCTAssertEqual(fabric.learnedAddresses, 2)
        XCTAssertTrue(waitUntil { fabric.learnedAddresses == 0 })
        XCTAssertTrue(exchangeBothWays(a, b))
    }

    /// C posts 8 receive buffers and never takes a frame from them. A sends it 20: 8 fit, the
    /// rest hold A back for the bounded wait and are then dropped, and A's frames for B go
    /// through (the old switch held A's whole transmit ring for good).
    func testADestinationWithoutBuffersCostsOnlyItsOwnFrames() throws {
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 3)
        defer { fabric.stop(); a.stop(); b.stop() }
        let c = try HostileFrontend(connectingTo: paths[0])
        try c.startEverything()
        XCTAssertTrue(waitUntil { fabric.statistics[0].isUp })
        // C teaches the switch its address with a broadcast.
        let frame = c.base + HostileFrontend.bufferBase
        frame.initializeMemory(as: UInt8.self, repeating: 0, count: 72)
        MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF).write(to: frame + 12)
        macC.write(to: frame + 18)
        c.writeValidFrame()
        c.makeAvailable(ring: 1, heads: [0])
        XCTAssertTrue(waitUntil { fabric.learnedAddresses == 1 })
        drain(a)
        drain(b)
        for _ in 0..<20 { XCTAssertEqual(send(from: a, destination: macC, source: macA), 1) }
        XCTAssertTrue(exchangeBothWays(a, b))
        // 12 of A's frames, and the copy of A's first frame for B, flooded while B was unknown.
        XCTAssertTrue(waitUntil { fabric.statistics[0].dropped == 13 }, "\(fabric.statistics)")
        XCTAssertEqual(fabric.statistics[0].sent, 8)
        XCTAssertEqual(fabric.statistics[1].received, 21)
    }
}
