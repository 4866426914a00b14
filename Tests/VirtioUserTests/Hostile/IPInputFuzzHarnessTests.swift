import Foundation
import VirtioUserIPFuzzing
import XCTest

/// The IP fuzz target's harness reaches lwIP's real input path: the seeds' datagram arrives
/// at the UDP socket (whole, or reassembled from fragments), only with checksums that verify,
/// and every seed cut short at every length is taken quietly.
final class IPInputFuzzHarnessTests: XCTestCase {
    private func seed(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: repositoryRoot.appendingPathComponent("Fuzz/Seeds/FuzzIPInput/\(name)")))
    }

    func testADatagramArrivesOnlyWithChecksumsThatVerify() throws {
        let harness = try IPInputFuzzHarness()
        var input = try seed("udp-datagram")
        XCTAssertEqual(input.withUnsafeBytes { harness.run($0) }.datagrams, 1)
        // Flag off: the seed's IPv4 header checksum is zero, and lwIP drops the packet.
        input[0] = 0
        XCTAssertEqual(input.withUnsafeBytes { harness.run($0) }.datagrams, 0)
    }

    func testFragmentsAreReassembledIntoOneDatagram() throws {
        let harness = try IPInputFuzzHarness()
        XCTAssertEqual(try seed("ipv4-fragments").withUnsafeBytes { harness.run($0) }.datagrams, 1)
    }

    /// Debian's lwIP forwards IP between interfaces; ours are hosts. A datagram for another
    /// tenant's network (198.51.100.0/24, the harness's second interface) sent to our MAC must
    /// not come out of that interface, not even as an ARP request for its destination.
    func testAPacketForAnotherInterfacesNetworkIsNotForwarded() throws {
        let harness = try IPInputFuzzHarness()
        let outcome = try seed("for-another-network").withUnsafeBytes { harness.run($0) }
        XCTAssertEqual(outcome.leaked, 0)
        XCTAssertEqual(outcome.datagrams, 0)
    }

    func testEverySeedCutAtEveryLengthIsTakenQuietly() throws {
        let harness = try IPInputFuzzHarness()
        let names = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot.appendingPathComponent("Fuzz/Seeds/FuzzIPInput").path)
        XCTAssertGreaterThanOrEqual(names.count, 7)
        for name in names {
            let input = try seed(name)
            for length in 0...input.count { input[..<length].withUnsafeBytes { _ = harness.run($0) } }
        }
    }
}
