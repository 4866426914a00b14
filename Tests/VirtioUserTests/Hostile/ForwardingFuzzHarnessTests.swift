import VirtioCore
import VhostUser
import VhostUserBackend
import VhostUserBackendFuzzing
import XCTest

/// The fuzz target's harness reaches the real data path: a well-formed input forwards a frame,
/// and malformed ones end quietly (the fuzzer runs these by the million in Scripts/fuzz.sh).
final class ForwardingFuzzHarnessTests: XCTestCase {
    /// Memory with one frame on the transmit ring and one buffer on the receive ring, laid out
    /// as the harness documents (receive ring at 0, transmit ring at 256; descriptors, then the
    /// available ring at +128).
    private func input(txLength: UInt32 = 12 + 60, rxFlags: UInt16 = 2) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 12 << 10)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + $0.count, with: $0) }
        }
        // Receive descriptor 0: 2 KiB at 8192, device-writable; available idx 1, head 0.
        put(UInt64(8192), at: 0); put(UInt32(2048), at: 8); put(rxFlags, at: 12)
        put(UInt16(1), at: 128 + 2)
        // Transmit descriptor 0: the frame at 4096; available idx 1, head 0.
        put(UInt64(4096), at: 256); put(txLength, at: 256 + 8)
        put(UInt16(1), at: 256 + 128 + 2)
        return bytes
    }

    func testWellFormedInputForwardsOneFrame() throws {
        let harness = try ForwardingFuzzHarness()
        XCTAssertEqual(input().withUnsafeBytes { harness.run($0) }, 1)
        // Again: the harness resets the rings for every input.
        XCTAssertEqual(input().withUnsafeBytes { harness.run($0) }, 1)
    }

    /// The transmit frame as an indirect table of two descriptors (header, then frame): read
    /// when indirect descriptors are negotiated (byte 512, bit 0), a violation when not.
    func testIndirectTableIsFollowedOnlyWhenNegotiated() throws {
        let harness = try ForwardingFuzzHarness()
        var bytes = input()
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + $0.count, with: $0) }
        }
        // Transmit descriptor 0: an indirect table of 32 bytes at 6144.
        put(UInt64(6144), at: 256); put(UInt32(32), at: 256 + 8); put(UInt16(4), at: 256 + 12)
        // Table: 12-byte header at 4096, next 1; 60 frame bytes at 4108.
        put(UInt64(4096), at: 6144); put(UInt32(12), at: 6144 + 8); put(UInt16(1), at: 6144 + 12); put(UInt16(1), at: 6144 + 14)
        put(UInt64(4108), at: 6160); put(UInt32(60), at: 6160 + 8)
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 0, "not negotiated: a violation")
        bytes[512] = 1
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 1, "negotiated: the frame is forwarded")
        // A table that nests another indirect table.
        put(UInt16(4 | 1), at: 6144 + 12)
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 0)
        // A table whose length is not a multiple of 16.
        put(UInt16(1), at: 6144 + 12)
        put(UInt32(24), at: 256 + 8)
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 0)
        // A table outside the memory.
        put(UInt32(32), at: 256 + 8)
        put(UInt64(1 << 40), at: 256)
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 0)
        // Mergeable buffers (bit 1): still one frame into one buffer.
        var plain = input()
        plain[512] = 2 | 4
        XCTAssertEqual(plain.withUnsafeBytes { harness.run($0) }, 1)
    }

    /// Offload requests in the transmit header (byte 512 bit 3: CSUM): a checksum filled in, a
    /// checksum position outside the frame a violation, an unnegotiated GSO a violation.
    func testOffloadRequestsAreCheckedAndServed() throws {
        let harness = try ForwardingFuzzHarness()
        var bytes = input()
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + $0.count, with: $0) }
        }
        bytes[512] = 8
        // Header at 4096: NEEDS_CSUM, start 20, offset 6 (inside the 60-byte frame).
        bytes[4096] = 1; put(UInt16(20), at: 4096 + 6); put(UInt16(6), at: 4096 + 8)
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 1, "the checksum is filled in")
        put(UInt16(59), at: 4096 + 6)
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 0, "a checksum beyond the frame: violation")
        put(UInt16(20), at: 4096 + 6)
        bytes[4097] = 1  // GSO TCPv4 without HOST_TSO4
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 0, "unnegotiated segmentation: violation")
        bytes[512] = 8 | 16
        XCTAssertEqual(bytes.withUnsafeBytes { harness.run($0) }, 1, "negotiated: taken (and dropped, as the receiver lacks GUEST_TSO4)")
    }

    func testMalformedInputsEndQuietly() throws {
        let harness = try ForwardingFuzzHarness()
        XCTAssertEqual(input(txLength: 4).withUnsafeBytes { harness.run($0) }, 0)       // shorter than the header
        XCTAssertEqual(input(rxFlags: 0).withUnsafeBytes { harness.run($0) }, 0)        // read-only receive buffer
        XCTAssertEqual([UInt8](repeating: 0xFF, count: 4096).withUnsafeBytes { harness.run($0) }, 0)
        XCTAssertEqual([UInt8]().withUnsafeBytes { harness.run($0) }, 0)
    }
}
