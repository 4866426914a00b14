import Foundation
import Synchronization
import VirtioCore
import VhostUserBackend
import VirtioUser
import XCTest

/// A data-path call enters its burst with a compiler barrier only; the control path pays for
/// both sides with membarrier(2) (`QueuePair.enter`). Whatever the control path does while a
/// thread bursts flat out — attaching and detaching captures, a back-end leaving and another
/// arriving (quiesce, reclaim, fresh memory and rings) — it never runs under a burst, and
/// nothing of the old session comes back in the new one: every buffer comes home and none is
/// released twice. (It found a back-end's last transmit completions, reported as it left,
/// freed a second time after the reclaim.)
final class BurstHandshakeTests: XCTestCase {
    private final class Flag: Sendable {
        let value = Atomic<Bool>(false)
    }

    func testTheControlPathNeverRunsUnderABurst() throws {
        let path = try makeSocketPath(self)
        var backend = try VhostUserBackend(configuration: .init(socketPath: path, mode: .loopback))
        try backend.start()
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("handshake-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        let stopping = Flag()
        let bursts = try DedicatedThread(name: "bursts") {
            let tx = PacketBurst(capacity: 32)
            let rx = PacketBurst(capacity: 32)
            while !stopping.value.load(ordering: .relaxed) {
                device.allocate(into: tx, count: tx.space)
                device.transmit(tx)
                device.release(tx)
                device.receive(into: rx)
                device.release(rx)
            }
        }
        for round in 0..<30 {
            try device.startCapture(PacketCapture(path: directory.appendingPathComponent("\(round).pcap").path))
            MonotonicClock.sleep(milliseconds: 5)
            _ = device.stopCapture()
            if round % 3 == 2 {
                backend.stop()
                XCTAssertTrue(waitUntil { device.linkState != .up }, "round \(round): the link goes down")
                backend = try VhostUserBackend(configuration: .init(socketPath: path, mode: .loopback))
                try backend.start()
                XCTAssertTrue(waitUntil { device.linkState == .up }, "round \(round): the link comes back")
            }
        }
        stopping.value.store(true, ordering: .relaxed)
        bursts.join()
        device.stop()
        backend.stop()
        let statistics = device.statistics
        XCTAssertGreaterThan(statistics.rx.packets, 0)
        XCTAssertEqual(device.availableBuffers(), statistics.poolSize, "every buffer back in the pool")
        XCTAssertEqual(device.invalidReleases(), 0, "no buffer released twice or from elsewhere")
    }
}
