#if canImport(Glibc)
import Glibc
#endif
import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Peers that die: the back-end or the front-end SIGKILLed mid-traffic and restarted 20 times,
/// and 1,000 connect/disconnect cycles. The surviving process must keep working, keep its
/// counters balanced and end with the fds and mappings it started with.
final class FaultToleranceTests: XCTestCase {
    static let rounds = 20

    func testBackendKilledTwentyTimesDuringTraffic() throws {
        let path = try makeSocketPath(self)
        var backend = try launchProduct("vhost-user-backend", ["--socket", path, "--mode", "loopback", "--stats-period", "0"])
        defer { kill(backend.processIdentifier, SIGKILL) }
        XCTAssertTrue(waitUntil { FileManager.default.fileExists(atPath: path) })
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.reconnectTimeoutMilliseconds = 20_000
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        let tx = PacketBurst(capacity: 32)
        let rx = PacketBurst(capacity: 32)
        var fdsBefore = 0
        var mapsBefore = 0
        for round in 0...Self.rounds {
            XCTAssertTrue(waitUntil(seconds: 20) { device.linkState == .up }, "round \(round): no reconnection")
            // Traffic flows again: some frames come back.
            let receivedBefore = device.statistics.rx.packets
            XCTAssertTrue(waitUntil { pump(device, tx, rx); return device.statistics.rx.packets > receivedBefore + 1000 },
                          "round \(round): no traffic after reconnecting")
            // Baseline after the first death and reconnection, when whatever Foundation's
            // Process creates lazily (a monitoring thread, its fds) exists already.
            if round == 1 {
                fdsBefore = openDescriptorCount()
                mapsBefore = mappingCount()
            }
            if round == Self.rounds { break }
            // Killed in the middle of traffic; the next back-end replaces its stale socket.
            kill(backend.processIdentifier, SIGKILL)
            backend.waitUntilExit()
            XCTAssertTrue(waitUntil { pump(device, tx, rx); return device.linkState != .up }, "round \(round): link stayed up")
            backend = try launchProduct("vhost-user-backend", ["--socket", path, "--mode", "loopback", "--stats-period", "0"])
        }
        device.release(tx)
        XCTAssertEqual(device.connectionCount, Self.rounds + 1)
        XCTAssertTrue(waitUntil { openDescriptorCount() == fdsBefore }, "fds: \(fdsBefore) before, \(openDescriptorCount()) after \(Self.rounds) back-end deaths")
        XCTAssertTrue(waitUntil { mappingCount() == mapsBefore }, "mappings: \(mapsBefore) before, \(mappingCount()) after")
        device.stop()
        let statistics = device.statistics
        XCTAssertEqual(statistics.tx.packets, statistics.tx.completed + statistics.tx.drops, "transmit balance")
        XCTAssertEqual(device.availableBuffers(), statistics.poolSize, "every buffer back in the pool")
        XCTAssertEqual(statistics.tx.errors + statistics.rx.errors, 0)
        print("faults: back-end killed \(Self.rounds)x; TX \(statistics.tx.packets) = completed \(statistics.tx.completed) + lost in flight \(statistics.tx.drops); RX \(statistics.rx.packets)")
    }

    func testFrontendKilledTwentyTimesDuringTraffic() throws {
        let backend = try startBackend(self, mode: .loopback)
        let path = backend.configuration.socketPath
        // The back-end serves on one long-lived thread: idle, it holds only its listener. The
        // baseline is taken idle after a first front-end came and died, when whatever
        // Foundation's Process creates lazily (a monitoring thread, its fds) exists already.
        var fdsBefore = 0
        var mapsBefore = 0
        for round in 0...Self.rounds {
            if round == 1 {
                XCTAssertTrue(waitUntil { backend.statistics.connections == 1 })
                MonotonicClock.sleep(milliseconds: 300)
                fdsBefore = openDescriptorCount()
                mapsBefore = mappingCount()
            }
            let receivedBefore = backend.statistics.framesReceived
            let frontend = try launchProduct("virtio-user-pmd", ["--socket", path, "--duration", "60", "--stats-period", "0"])
            XCTAssertTrue(waitUntil { backend.statistics.framesReceived > receivedBefore + 1000 }, "round \(round): no traffic")
            kill(frontend.processIdentifier, SIGKILL)
            frontend.waitUntilExit()
        }
        XCTAssertTrue(waitUntil { openDescriptorCount() == fdsBefore }, "fds: \(fdsBefore) before, \(openDescriptorCount()) after")
        XCTAssertTrue(waitUntil { mappingCount() == mapsBefore }, "mappings: \(mapsBefore) before, \(mappingCount()) after")
        XCTAssertEqual(backend.statistics.connections, UInt64(Self.rounds + 1))
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
        // Still serving.
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 5), total: 2000).intact, 2000)
        device.stop()
        print("faults: front-end killed \(Self.rounds)x; back-end received \(backend.statistics.framesReceived) frames, fds and mappings back to \(fdsBefore)/\(mapsBefore)")
    }

    func testThousandConnectDisconnectCyclesLeakNothing() throws {
        let backend = try startBackend(self, mode: .loopback)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        device.stop()
        XCTAssertTrue(waitUntil { backend.statistics.connections == 1 })
        MonotonicClock.sleep(milliseconds: 200)
        let fdsBefore = openDescriptorCount()
        let mapsBefore = mappingCount()
        for _ in 0..<1000 {
            try device.start()
            device.stop()
        }
        XCTAssertTrue(waitUntil { backend.statistics.connections == 1001 })
        XCTAssertTrue(waitUntil { openDescriptorCount() == fdsBefore }, "fds: \(fdsBefore) before, \(openDescriptorCount()) after")
        XCTAssertTrue(waitUntil { mappingCount() == mapsBefore }, "mappings: \(mapsBefore) before, \(mappingCount()) after")
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
        print("faults: 1000 connect/disconnect cycles; fds \(fdsBefore) -> \(openDescriptorCount()), mappings \(mapsBefore) -> \(mappingCount())")
    }
}

/// One round of traffic: fill, send, receive, free.
private func pump(_ device: VirtioUserDevice, _ tx: PacketBurst, _ rx: PacketBurst) {
    fillWithFrames(tx, from: device)
    device.transmit(tx)
    device.receive(into: rx)
    device.release(rx)
}
