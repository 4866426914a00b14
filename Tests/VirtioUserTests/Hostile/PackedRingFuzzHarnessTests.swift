import VirtioCore
import VhostUser
import VhostUserBackend
import VhostUserBackendFuzzing
import XCTest

/// The back-end's packed device half over hostile ring memory, through the fuzz harness
/// (byte 512 bit 5: packed rings; each ring's descriptors at its start, receive ring at 0,
/// transmit ring at 256). Well-formed chains forward; malformed ones stop the ring quietly.
final class PackedRingFuzzHarnessTests: XCTestCase {
    private static let avail: UInt16 = 0x80   // VIRTQ_DESC_F_AVAIL with wrap counter 1
    private static let next: UInt16 = 1
    private static let write: UInt16 = 2
    private static let indirect: UInt16 = 4

    private var bytes = [UInt8](repeating: 0, count: 12 << 10)

    private func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(offset..<offset + $0.count, with: $0) }
    }

    /// A descriptor of ring `base` (0 receive, 256 transmit) in `slot`.
    private func descriptor(ring base: Int, slot: Int, address: UInt64, length: UInt32, id: UInt16 = 0, flags: UInt16) {
        let offset = base + slot * 16
        put(address, at: offset); put(length, at: offset + 8); put(id, at: offset + 12); put(flags, at: offset + 14)
    }

    /// One 2 KiB receive buffer, and a transmit chain of header (12 bytes) + frame (60 bytes).
    override func setUp() {
        bytes = [UInt8](repeating: 0, count: 12 << 10)
        bytes[512] = 32
        descriptor(ring: 0, slot: 0, address: 8192, length: 2048, flags: Self.write | Self.avail)
        descriptor(ring: 256, slot: 0, address: 4096, length: 12, flags: Self.next | Self.avail)
        descriptor(ring: 256, slot: 1, address: 4108, length: 60, id: 7, flags: Self.avail)
    }

    private func run() throws -> Int {
        let harness = try ForwardingFuzzHarness()
        return bytes.withUnsafeBytes { harness.run($0) }
    }

    func testWellFormedChainIsForwarded() throws {
        XCTAssertEqual(try run(), 1)
        bytes[512] = 0
        XCTAssertEqual(try run(), 0, "the same memory read as a split ring holds no available entry")
    }

    func testChainRunningPastEveryFilledSlotStopsTheRing() throws {
        for slot in 0..<8 { descriptor(ring: 256, slot: slot, address: 4096, length: 12, flags: Self.next | Self.avail) }
        XCTAssertEqual(try run(), 0)
    }

    func testContinuationThatIsNotAvailableStopsTheRing() throws {
        descriptor(ring: 256, slot: 1, address: 4108, length: 60, flags: 0)
        XCTAssertEqual(try run(), 0)
    }

    func testIndirectDescriptorInsideAChainStopsTheRing() throws {
        bytes[512] = 32 | 1
        descriptor(ring: 256, slot: 0, address: 6144, length: 32, flags: Self.indirect | Self.next | Self.avail)
        XCTAssertEqual(try run(), 0)
    }

    /// An indirect table of header + frame: followed only when negotiated (bit 0), its header
    /// entry may carry WRITE as DPDK's does, and it must lie inside the memory.
    func testIndirectTable() throws {
        descriptor(ring: 256, slot: 0, address: 6144, length: 32, id: 3, flags: Self.indirect | Self.avail)
        descriptor(ring: 6144, slot: 0, address: 4096, length: 12, flags: Self.write)
        descriptor(ring: 6144, slot: 1, address: 4108, length: 60, flags: 0)
        XCTAssertEqual(try run(), 0, "not negotiated: a violation")
        bytes[512] = 32 | 1
        XCTAssertEqual(try run(), 1, "negotiated: forwarded, WRITE on the header entry tolerated")
        descriptor(ring: 256, slot: 0, address: 6144, length: 24, id: 3, flags: Self.indirect | Self.avail)
        XCTAssertEqual(try run(), 0, "a table length that is not a multiple of 16")
        descriptor(ring: 256, slot: 0, address: 1 << 40, length: 32, id: 3, flags: Self.indirect | Self.avail)
        XCTAssertEqual(try run(), 0, "a table outside the memory")
    }

    func testReadOnlyReceiveBufferStopsTheRing() throws {
        descriptor(ring: 0, slot: 0, address: 8192, length: 2048, flags: Self.avail)
        XCTAssertEqual(try run(), 0)
    }
}
