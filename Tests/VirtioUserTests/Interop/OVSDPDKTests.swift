import CAllocationCounter
import Foundation
import XCTest

/// Our device where hosts run it: two containers' devices (own network namespaces, user
/// nobody, each listening on its socket) behind `dpdkvhostuserclient` ports of Open vSwitch with
/// DPDK, the switch cross-connecting them. A sends with `--verify`, B (interrupt mode) checks
/// every frame; the counts of A, OVS and B must balance exactly.
///
/// OVS's datapath thread polls CPU 0; the devices share CPU 1. Plain pass only: the sanitizer
/// passes would run the same external peer again, several times slower.
final class OVSDPDKTests: XCTestCase {
    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("OVS with DPDK and namespaces need root; CI runs as root") }
        try XCTSkipUnless(allocation_counter_available() == 1, "the OVS tests run in the plain (unsanitized) pass")
    }

    /// One exchange A → OVS → B. Returns A's and B's summaries after checking the counts.
    @discardableResult
    private func exchange(
        _ ovs: PrivateOVS, sender: [String] = [], receiver: [String] = [], ports: [String] = [],
        seconds: Double = 2, during: (() throws -> Void)? = nil
    ) throws -> (a: PMDSummary, b: PMDSummary) {
        let a = ovs.socketDirectory + "/a.sock", b = ovs.socketDirectory + "/b.sock"
        let common = ["--server", "--connect-timeout", "60000", "--stats-period", "0"]
        let receiving = try ContainerDevice("b", in: ovs.directory, common + [
            "--socket", b, "--forward-mode", "rxonly", "--rx-wait", "10", "--verify",
            "--duration", String(seconds + 3)] + receiver)
        XCTAssertTrue(waitUntil(seconds: 30) { FileManager.default.fileExists(atPath: b) })
        try ovs.crossConnect("br0", 1, 2)
        // B's port first, and ready before A's link comes up: a frame sent to a port OVS has not
        // set up yet is dropped without being counted at the port.
        try ovs.addVhostPort("br0", "vhu-b", number: 2, socket: b, ports)
        XCTAssertTrue(waitUntil(seconds: 30) { ovs.isReady(socket: b) }, ovs.logTail())
        try ovs.addVhostPort("br0", "vhu-a", number: 1, socket: a, ports)
        let sending = try ContainerDevice("a", in: ovs.directory, common + [
            "--socket", a, "--forward-mode", "txonly", "--cpu", "1", "--verify",
            "--duration", String(seconds)] + sender)
        try during?()
        let resultA = try sending.finish()
        // B stays connected a while longer: OVS's counters for its port are readable only then.
        let toB = try ovs.transmitCounters("vhu-b")
        // Flow counters reach OpenFlow with the revalidators' next pass (every half second or
        // so): wait, boundedly, for the last of them.
        let sentByA = resultA.tx.packets - resultA.tx.drops
        _ = waitUntil(seconds: 5) { self.fromA(ovs) + ((try? ovs.datapathDrops()) ?? 0) == sentByA }
        let fromA = try ovs.receivedFrames("br0", inPort: 1)
        let datapathDrops = try ovs.datapathDrops()
        let resultB = try receiving.finish()
        let report = "A: \(resultA) B: \(resultB) OVS from A \(fromA), datapath drops \(datapathDrops), to B \(toB)\n\(ovs.logTail())"
        print("ovs: A sent \(sentByA), OVS received \(fromA) (+ \(datapathDrops) dropped in its datapath), sent \(toB.sent), "
              + "dropped \(toB.dropped) (B's ring full); B received \(resultB.rx.packets), intact \(resultB.verify?.intact ?? 0)")

        XCTAssertEqual(resultA.status, 0, report)
        XCTAssertEqual(resultB.status, 0, report)
        XCTAssertEqual(resultA.linkAtEnd, "up", report)
        XCTAssertEqual(resultB.linkAtEnd, "up", report)
        XCTAssertGreaterThan(resultB.rx.packets, 10_000, report)
        XCTAssertEqual(resultB.verify?.corrupt, 0, report)
        XCTAssertEqual(resultB.verify?.intact, resultB.rx.packets, "every frame B received is one A sent, intact")
        XCTAssertEqual(resultA.tx.errors + resultB.rx.errors + resultB.rx.drops, 0, report)
        if during == nil {
            // Exact balance when nothing came and went in between. Frames OVS had not taken
            // from A's ring when A stopped, A counts as dropped.
            // OVS drops some frames before any flow counts them (upcall errors while it sets up
            // a flow); its coverage counters have them.
            XCTAssertEqual(fromA + datapathDrops, sentByA, "OVS received what A sent. \(report)")
            XCTAssertLessThanOrEqual(resultA.tx.drops, 256, "at most a ring's worth left behind")
            XCTAssertEqual(toB.sent, resultB.rx.packets, "B received what OVS sent. \(report)")
            XCTAssertEqual(fromA, toB.sent + toB.dropped, "OVS received = sent + dropped. \(report)")
        }
        return (resultA, resultB)
    }

    /// Frames OVS has taken from A so far.
    private func fromA(_ ovs: PrivateOVS) -> UInt64 { (try? ovs.receivedFrames("br0", inPort: 1)) ?? 0 }

    private func startOVS() throws -> PrivateOVS {
        let ovs = try PrivateOVS(self)
        try ovs.addBridge("br0")
        return ovs
    }

    func testFramesCrossOVSIntactAndEveryFrameIsAccountedFor() throws {
        let ovs = try startOVS()
        let (a, b) = try exchange(ovs)
        XCTAssertTrue(a.features.contains("IN_ORDER"), a.features)
        XCTAssertTrue(b.features.contains("MRG_RXBUF"), b.features)
    }

    func testPackedRings() throws {
        let ovs = try startOVS()
        let (a, b) = try exchange(ovs, sender: ["--packed"], receiver: ["--packed"])
        XCTAssertTrue(a.features.contains("RING_PACKED"), a.features)
        XCTAssertTrue(b.features.contains("RING_PACKED"), b.features)
    }

    func testWithoutInOrderAndWithEventIndex() throws {
        let ovs = try startOVS()
        let (a, b) = try exchange(ovs, sender: ["--no-in-order", "--event-idx"], receiver: ["--no-in-order", "--event-idx"])
        XCTAssertFalse(a.features.contains("IN_ORDER"), a.features)
        XCTAssertTrue(a.features.contains("EVENT_IDX"), a.features)
        XCTAssertTrue(b.features.contains("EVENT_IDX"), b.features)
    }

    func testHugepageMemory() throws {
        try reserveHugepages(64, for: self)
        let ovs = try startOVS()
        let (a, b) = try exchange(ovs, sender: ["--hugepages"], receiver: ["--hugepages"])
        XCTAssertFalse(a.stderr.contains("warning"), "no fallback to normal pages: \(a.stderr)")
        XCTAssertFalse(b.stderr.contains("warning"), "no fallback to normal pages: \(b.stderr)")
    }

    /// 9000-byte frames: A sends each as a chain of buffers, OVS (MTU 9000) passes them, and B
    /// receives them over mergeable buffers.
    func testJumboFrames() throws {
        let ovs = try startOVS()
        let (_, b) = try exchange(ovs, sender: ["--pkt-size", "9000", "--mtu", "9000"], receiver: ["--mtu", "9000"],
                                  ports: ["mtu_request=9000"])
        XCTAssertGreaterThan(b.rx.packets, 10_000)
    }

    /// The port is deleted and added again mid-run: A's link goes down and comes back (two
    /// sessions), and frames flow again, intact.
    func testReconnectAfterDelPortAndAddPort() throws {
        let ovs = try startOVS()
        let (a, _) = try exchange(ovs, seconds: 8) {
            XCTAssertTrue(waitUntil(seconds: 20) { self.fromA(ovs) > 0 }, ovs.logTail())
            try ovs.vsctl("del-port", "br0", "vhu-a")
            let before = self.fromA(ovs)
            try ovs.addVhostPort("br0", "vhu-a", number: 1, socket: ovs.socketDirectory + "/a.sock")
            XCTAssertTrue(waitUntil(seconds: 20) { self.fromA(ovs) > before }, "frames flow again after add-port. \(ovs.logTail())")
        }
        XCTAssertEqual(a.sessions, 2, "A was connected, dropped, and connected again")
    }

    /// ovs-vswitchd is killed (SIGKILL) mid-run and started again: both devices' links come
    /// back by themselves and frames flow again, intact.
    func testReconnectAfterTheSwitchIsKilledAndRestarted() throws {
        let ovs = try startOVS()
        let (a, b) = try exchange(ovs, seconds: 10) {
            XCTAssertTrue(waitUntil(seconds: 20) { self.fromA(ovs) > 0 }, ovs.logTail())
            try ovs.killSwitch()
            try ovs.restartSwitch()
            // OpenFlow flows live in ovs-vswitchd, not in its database: they start again from 0.
            try ovs.crossConnect("br0", 1, 2)
            XCTAssertTrue(waitUntil(seconds: 20) { self.fromA(ovs) > 0 && ((try? ovs.transmitCounters("vhu-b"))?.sent ?? 0) > 0 },
                          "frames flow again after the restart. \(ovs.logTail())")
        }
        XCTAssertEqual(a.sessions, 2)
        XCTAssertEqual(b.sessions, 2)
    }

    /// Beyond one host: two OVS instances in two network namespaces ("hosts") joined by a
    /// veth pair, a VXLAN tunnel between their bridges, one of our devices on each side
    /// (Scripts/ovs-vxlan.sh). Frames cross the tunnel intact.
    func testFramesCrossAVXLANTunnelBetweenTwoHosts() throws {
        let result = try runSpawned(repositoryRoot.appendingPathComponent("Scripts/ovs-vxlan.sh").path,
                                    ["--bin", productsDirectory.path, "--seconds", "3"])
        print(result.output.split(separator: "\n").filter { $0.hasPrefix("ovs-vxlan") || $0.contains("verify:") }.joined(separator: "\n"))
        XCTAssertEqual(result.status, 0, result.output + result.errors)
        XCTAssertTrue(result.output.contains("frames crossed the VXLAN tunnel intact, 0 corrupt"), result.output)
    }
}
