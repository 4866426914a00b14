import Foundation
import VirtioUserIPFuzzing
import XCTest

/// The IP fuzz target's harness reaches lwIP's real input path: the seeds' datagram arrives
/// at the UDP socket (whole, or reassembled from fragments), only with checksums that verify
/// or that the link completed, and every seed cut short at every length is taken quietly.
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

    /// The offload fields of a received frame, as a device that negotiated GUEST_CSUM hands
    /// them over: a checksum the sender left open (NEEDS_CSUM; the UDP field holds only the
    /// pseudo-header's sum) is completed, so the datagram arrives; a position the sender put
    /// outside the frame, and a segmented frame (never negotiated), are dropped, and the link
    /// goes on.
    func testAChecksumLeftOpenIsCompletedAndAPositionOutsideTheFrameDropsIt() throws {
        let harness = try IPInputFuzzHarness()
        let frame = try openChecksumDatagram()
        func delivered(_ flags: UInt8, gso: UInt8 = 0, start: Int, offset: Int) -> Int {
            let record = [flags, gso, UInt8(start >> 8), UInt8(start & 0xFF), UInt8(offset >> 8), UInt8(offset & 0xFF)] + frame
            let input = [0x02, UInt8(record.count >> 8), UInt8(record.count & 0xFF)] + record
            return input.withUnsafeBytes { harness.run($0) }.datagrams
        }
        let n = frame.count
        XCTAssertEqual(delivered(1, start: 34, offset: 6), 1, "the open checksum was completed")
        XCTAssertEqual(delivered(0, start: 34, offset: 6), 0, "without NEEDS_CSUM the open checksum is wrong")
        for (start, offset) in [(n - 1, 0), (34, n - 35), (n, 6), (0xFFFF, 0xFFFF), (0, 0xFFFF)] {
            XCTAssertEqual(delivered(1, start: start, offset: offset), 0, "checksum at \(start) + \(offset) in \(n) bytes")
        }
        XCTAssertEqual(delivered(1, gso: 1, start: 34, offset: 6), 0, "a TCPv4 segmentation frame")
        XCTAssertEqual(delivered(1, start: 34, offset: 6), 1, "the link goes on")
        XCTAssertEqual(try seed("udp-open-checksum").withUnsafeBytes { harness.run($0) }.datagrams, 1, "the fuzz seed of this case")
    }

    /// The udp-datagram seed's frame with its IPv4 header checksum in place and, in UDP's
    /// checksum field, the pseudo-header's sum: what a sender that leaves the checksum to the
    /// receiver puts there.
    private func openChecksumDatagram() throws -> [UInt8] {
        var frame = Array(try seed("udp-datagram").dropFirst(3))
        func sum(_ range: Range<Int>) -> UInt32 {
            stride(from: range.lowerBound, to: range.upperBound, by: 2).reduce(0) { $0 + (UInt32(frame[$1]) << 8 | UInt32(frame[$1 + 1])) }
        }
        func fold(_ value: UInt32) -> UInt16 {
            var value = value
            while value > 0xFFFF { value = (value & 0xFFFF) + (value >> 16) }
            return UInt16(value)
        }
        frame[24] = 0; frame[25] = 0
        let header = ~fold(sum(14..<34))
        frame[24] = UInt8(header >> 8); frame[25] = UInt8(header & 0xFF)
        let pseudo = fold(sum(26..<34) + 17 + (UInt32(frame[38]) << 8 | UInt32(frame[39])))
        frame[40] = UInt8(pseudo >> 8); frame[41] = UInt8(pseudo & 0xFF)
        return frame
    }

    /// lwIP 2.1 reads a whole ARP header without checking the frame holds it: the link pads a
    /// short frame with zeros. An ARP request cut one byte short of its target address must
    /// not be answered, whatever the heap held past it: here the whole request just before,
    /// whose last byte is our address's, freed into the allocation the cut one gets.
    func testAnARPRequestCutShortIsReadAsPaddedWithZeros() throws {
        let harness = try IPInputFuzzHarness()
        let request = try seed("arp-request")  // flags, length 42, the request for 192.0.2.2
        XCTAssertEqual(request.count, 3 + 42)
        for _ in 0..<3 {
            XCTAssertEqual(request.withUnsafeBytes { harness.run($0) }.answered, 1, "the whole request is answered")
            XCTAssertEqual(request[..<(request.count - 1)].withUnsafeBytes { harness.run($0) }.answered, 0,
                           "a request cut before its target address's last byte was answered")
        }
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
