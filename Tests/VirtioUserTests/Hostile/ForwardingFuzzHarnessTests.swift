@_spi(Fuzzing) import VhostUserBackend
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

    func testMalformedInputsEndQuietly() throws {
        let harness = try ForwardingFuzzHarness()
        XCTAssertEqual(input(txLength: 4).withUnsafeBytes { harness.run($0) }, 0)       // shorter than the header
        XCTAssertEqual(input(rxFlags: 0).withUnsafeBytes { harness.run($0) }, 0)        // read-only receive buffer
        XCTAssertEqual([UInt8](repeating: 0xFF, count: 4096).withUnsafeBytes { harness.run($0) }, 0)
        XCTAssertEqual([UInt8]().withUnsafeBytes { harness.run($0) }, 0)
    }
}
