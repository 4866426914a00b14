import CAllocationCounter
import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// The learning switch between front-ends: container-to-container IPC with no kernel in the path.
final class SwitchTests: XCTestCase {
    private let macA = MACAddress(0x02, 0, 0, 0, 0, 0x0A)
    private let macB = MACAddress(0x02, 0, 0, 0, 0, 0x0B)
    private let macC = MACAddress(0x02, 0, 0, 0, 0, 0x0C)

    private func makeSwitch(ports: Int) throws -> (VhostUserSwitch, [String]) {
        let paths = try (0..<ports).map { try makeSocketPath(self, name: "port\($0).sock") }
        let fabric = try VhostUserSwitch(configuration: .init(portPaths: paths))
        try fabric.start()
        addTeardownBlock { fabric.stop() }
        return (fabric, paths)
    }

    private func device(_ path: String, mac: MACAddress, packed: Bool = false, queueSize: Int = 256) throws -> VirtioUserDevice {
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.queueSize = queueSize
        configuration.macAddress = mac
        configuration.packedRing = packed
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        return device
    }

    /// Two device processes — this one, and a virtio-user-pmd in macswap mode — exchange
    /// 1,000,000 frames each way through the switch, every one intact (100,000 under the
    /// sanitizers). A third port's device
    /// gets only the frames flooded before the switch learned where B is.
    func testTwoDeviceProcessesExchangeAMillionFramesIntact() throws {
        let (fabric, paths) = try makeSwitch(ports: 3)
        let peer = Process()
        peer.executableURL = productsDirectory.appendingPathComponent("virtio-user-pmd")
        // Larger rings than the default let more frames be in flight per round trip: three
        // polling threads (this one, the switch, the pmd) share two CPUs here.
        peer.arguments = ["--socket", paths[1], "--forward-mode", "macswap", "--mac", "\(macB)", "--duration", "300", "--stats-period", "0",
                          "--queue-size", "1024"]
        let peerOutput = Pipe()
        peer.standardOutput = peerOutput
        peer.standardError = peerOutput
        try peer.run()
        defer { if peer.isRunning { peer.terminate() } }
        let bystander = try device(paths[2], mac: macC, packed: true)
        defer { bystander.stop() }
        let sender = try device(paths[0], mac: macA, queueSize: 1024)
        defer { sender.stop() }
        XCTAssertTrue(waitUntil(seconds: 20) { fabric.statistics.allSatisfy(\.isUp) }, "all three front-ends up: \(fabric.statistics)")

        // A million in the plain pass; the sanitizer passes (slower several times over) check
        // the same paths with a tenth.
        let total: UInt64 = allocation_counter_available() == 1 ? 1_000_000 : 100_000
        let stream = FrameStream(seed: 0x5717C4, minimumLength: 60, maximumLength: 1514, addresses: (macB, macA))
        // At most 512 frames in flight: the pmd drops what it cannot send back at once.
        let result = runLoopbackStream(device: sender, stream: stream, total: total, window: 512, macSwapped: true)
        XCTAssertEqual(result.sent, total)
        XCTAssertEqual(result.intact, total, "every frame came back from the other process intact")

        // The bystander saw only floods (addressed to B before B was learned); those that
        // found its 256 receive buffers full were dropped for it, not for anyone else.
        let seen = PacketBurst(capacity: 1024)
        while bystander.receive(into: seen) > 0 {}
        let flooded = fabric.statistics.map(\.flooded).reduce(0, +)
        let toBystander = fabric.statistics[2]
        XCTAssertEqual(UInt64(seen.count), toBystander.sent, "port C receives exactly what was flooded to it")
        XCTAssertEqual(toBystander.sent + toBystander.dropped, flooded)
        XCTAssertLessThanOrEqual(flooded, 512, "only the first window, before B answered, was flooded")
        bystander.release(seen)
        XCTAssertEqual(fabric.learnedAddresses, 2)

        peer.interrupt()
        let printed = String(decoding: peerOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        peer.waitUntilExit()
        XCTAssertEqual(peer.terminationStatus, 0, printed)
        let ports = fabric.statistics
        print("switch: A received \(ports[0].received) sent \(ports[0].sent); B received \(ports[1].received) sent \(ports[1].sent); "
              + "C sent \(ports[2].sent); flooded \(flooded); learned \(fabric.learnedAddresses)")
        XCTAssertEqual(ports[0].received, total, "A's frames all entered the switch")
        XCTAssertEqual(ports[1].received, total, "B's replies all entered the switch")
        XCTAssertEqual(ports[0].sent, total, "and all reached A")
        XCTAssertEqual(ports[1].sent, total)
        XCTAssertEqual(ports[0].dropped + ports[1].dropped, 0, "nothing lost between A and B")
        XCTAssertEqual(ports.map(\.protocolErrors).reduce(0, +), 0)
        XCTAssertTrue(printed.contains("drops: TX 0  RX 0  forwarder 0"), printed)
    }

    /// A broadcast reaches every other port; a frame for an address not seen yet is flooded
    /// too; once learned, a unicast frame reaches only its port. A port whose front-end left
    /// is forgotten, and a new front-end on it is served.
    func testLearningFloodingAndForgetting() throws {
        let (fabric, paths) = try makeSwitch(ports: 3)
        let a = try device(paths[0], mac: macA)
        let b = try device(paths[1], mac: macB)
        var c: VirtioUserDevice? = try device(paths[2], mac: macC)
        defer { a.stop(); b.stop(); c?.stop() }
        XCTAssertTrue(waitUntil { fabric.statistics.allSatisfy(\.isUp) }, "\(fabric.statistics)")
        func send(from device: VirtioUserDevice, to destination: MACAddress, source: MACAddress) {
            XCTAssertEqual(self.send(from: device, destination: destination, source: source), 1)
        }
        func received(_ device: VirtioUserDevice) -> Int {
            let inbox = PacketBurst(capacity: 32)
            var total = 0
            // Long enough for the switch to have moved everything sent so far.
            let deadline = MonotonicClock.nanoseconds() + 200_000_000
            while MonotonicClock.nanoseconds() < deadline {
                total += device.receive(into: inbox)
                device.release(inbox)
            }
            return total
        }
        let broadcast = MACAddress(0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF)
        send(from: a, to: broadcast, source: macA)
        XCTAssertEqual([received(b), received(c!)], [1, 1], "a broadcast reaches both other ports")
        send(from: b, to: macA, source: macB)                 // A is known now: unicast
        XCTAssertEqual([received(a), received(c!)], [1, 0])
        send(from: a, to: macC, source: macA)                 // C not seen yet: flooded
        XCTAssertEqual([received(b), received(c!)], [1, 1])
        XCTAssertEqual(fabric.learnedAddresses, 2)
        send(from: c!, to: macA, source: macC)
        XCTAssertEqual(received(a), 1)
        XCTAssertEqual(fabric.learnedAddresses, 3)

        // C leaves: its address is forgotten; a new front-end on the port is served.
        c?.stop()
        c = nil
        XCTAssertTrue(waitUntil { fabric.learnedAddresses == 2 }, "\(fabric.learnedAddresses)")
        let c2 = try device(paths[2], mac: macC)
        defer { c2.stop() }
        XCTAssertTrue(waitUntil { fabric.statistics[2].isUp })
        send(from: a, to: macC, source: macA)                 // unknown again: flooded
        XCTAssertEqual([received(b), received(c2)], [1, 1])
        XCTAssertEqual(fabric.statistics[2].connections, 2)
    }

    func testConfigurationIsValidated() throws {
        let path = try makeSocketPath(self)
        XCTAssertThrowsError(try VhostUserSwitch(configuration: .init(portPaths: [path])))
        XCTAssertThrowsError(try VhostUserSwitch(configuration: .init(portPaths: [path, path])))
        let paths = try (0..<2).map { try makeSocketPath(self, name: "v\($0).sock") }
        for adjust: (inout VhostUserSwitch.Configuration) -> Void in [
            { $0.addressesPerPort = 0 }, { $0.addressAgeingMilliseconds = 0 }, { $0.fullDestinationWaitMilliseconds = 0 },
            { $0.fullDestinationWaitMilliseconds = 10_001 }, { $0.addressesPerPort = 4097 },
        ] {
            var configuration = VhostUserSwitch.Configuration(portPaths: paths)
            adjust(&configuration)
            XCTAssertThrowsError(try VhostUserSwitch(configuration: configuration))
        }
    }
}
