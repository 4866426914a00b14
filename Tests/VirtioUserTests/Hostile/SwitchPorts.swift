import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A switch with well-behaved devices on two ports, and frames between them: what the hostile
/// switch tests check still works while one port misbehaves.
extension XCTestCase {
    /// A switch with `ports` ports and well-behaved devices on the last two (MACs …:01 and
    /// …:02), both up.
    func startSwitchWithTwoDevices(
        ports: Int, configure: (inout VhostUserSwitch.Configuration) -> Void = { _ in }
    ) throws -> (VhostUserSwitch, VirtioUserDevice, VirtioUserDevice, [String]) {
        let paths = try (0..<ports).map { try makeSocketPath(self, name: "port\($0).sock") }
        var switchConfiguration = VhostUserSwitch.Configuration(portPaths: paths)
        configure(&switchConfiguration)
        let fabric = try VhostUserSwitch(configuration: switchConfiguration)
        try fabric.start()
        var configuration = VirtioUserDevice.Configuration(socketPath: paths[ports - 2])
        configuration.macAddress = MACAddress(0x02, 0, 0, 0, 0, 0x01)
        let a = try VirtioUserDevice(configuration: configuration)
        configuration.socketPath = paths[ports - 1]
        configuration.macAddress = MACAddress(0x02, 0, 0, 0, 0, 0x02)
        let b = try VirtioUserDevice(configuration: configuration)
        try a.start()
        try b.start()
        XCTAssertTrue(waitUntil { fabric.statistics[ports - 2].isUp && fabric.statistics[ports - 1].isUp })
        return (fabric, a, b, paths)
    }

    /// Sends one 60-byte frame; returns 1 when it went.
    func send(from sender: VirtioUserDevice, destination: MACAddress, source: MACAddress) -> Int {
        let burst = PacketBurst(capacity: 8)
        sender.allocate(into: burst, count: 1)
        var packet = burst[0]
        packet.data.initializeMemory(as: UInt8.self, repeating: 0x33, count: 60)
        destination.write(to: packet.data)
        source.write(to: packet.data + 6)
        packet.length = 60
        burst[0] = packet
        let sent = sender.transmit(burst)
        sender.release(burst)
        return sent
    }

    /// Receives and releases whatever arrives within 100 ms; returns how many frames did.
    @discardableResult
    func drain(_ device: VirtioUserDevice) -> Int {
        let burst = PacketBurst(capacity: 32)
        let deadline = MonotonicClock.nanoseconds() + 100_000_000
        var received = 0
        while MonotonicClock.nanoseconds() < deadline {
            received += device.receive(into: burst)
            device.release(burst)
        }
        return received
    }

    /// Sends one 60-byte frame from `sender`; returns how many frames `receiver` then got.
    func exchange(from sender: VirtioUserDevice, to receiver: VirtioUserDevice, destination: MACAddress, source: MACAddress) -> Int {
        let burst = PacketBurst(capacity: 8)
        guard send(from: sender, destination: destination, source: source) == 1 else { return -1 }
        var received = 0
        let deadline = MonotonicClock.nanoseconds() + 2_000_000_000
        while received == 0, MonotonicClock.nanoseconds() < deadline {
            received += receiver.receive(into: burst)
            receiver.release(burst)
        }
        return received
    }

    /// One frame from A (…:01) to B (…:02) and one back; true when both arrived.
    func exchangeBothWays(_ a: VirtioUserDevice, _ b: VirtioUserDevice) -> Bool {
        let macA = MACAddress(0x02, 0, 0, 0, 0, 0x01)
        let macB = MACAddress(0x02, 0, 0, 0, 0, 0x02)
        return exchange(from: a, to: b, destination: macB, source: macA) == 1
            && exchange(from: b, to: a, destination: macA, source: macB) == 1
    }
}
