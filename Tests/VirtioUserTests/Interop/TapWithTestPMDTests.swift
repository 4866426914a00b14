import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// DPDK's virtio-user through our back-end's TAP to the kernel: testpmd in 5tswap mode swaps
/// the MAC and IPv4 addresses of what it receives and sends it back, so the kernel's echo
/// request comes back as a request from 192.0.2.2, which the kernel answers, and that answer
/// comes back swapped as the reply ping waits for. Every ping crosses the TAP and testpmd
/// four times.
final class TapWithTestPMDTests: XCTestCase {
    func testKernelPingsComeBackThroughDPDKVirtioUser() throws {
        let kernel = try tapBackendInNamespace(self)
        try runIP(["-n", kernel.namespace, "neigh", "replace", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", kernel.tap, "nud", "permanent"])
        let testpmd = try TestPMD(.virtioUser, socket: kernel.backend.configuration.socketPath, ["--forward-mode", "5tswap"])
        XCTAssertTrue(waitUntil { kernel.backend.statistics.connections == 1 }, testpmd.output.suffix(1500).description)
        let ping = try runProgram("/usr/sbin/ip", ["netns", "exec", kernel.namespace, "ping", "-n", "-c", "100", "-i", "0.01", "-w", "60", "192.0.2.2"])
        let totals = try testpmd.stop()
        XCTAssertEqual(ping.status, 0, ping.output + ping.errors)
        XCTAssertTrue(ping.output.contains("100 packets transmitted, 100 received, 0% packet loss"), ping.output)
        // The requests and the kernel's answers to them, nothing else (IPv6 is off).
        XCTAssertEqual(totals.rxPackets, 200, "\(totals)")
        XCTAssertEqual(totals.txPackets, totals.rxPackets, "\(totals)")
        XCTAssertEqual(totals.txDropped + totals.rxDropped, 0, "\(totals)")
        let statistics = kernel.backend.statistics
        XCTAssertEqual(statistics.framesReceived, totals.txPackets, "every frame testpmd sent reached the TAP")
        XCTAssertEqual(statistics.framesSent, totals.rxPackets, "testpmd received every frame the kernel sent")
        XCTAssertEqual(statistics.drops + statistics.protocolErrors, 0, statistics.lastError.map { "\($0)" } ?? "")
    }
}
