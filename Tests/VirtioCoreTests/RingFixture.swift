import CVirtioShim
import VirtioCore
import XCTest

/// One split ring in private page-aligned memory with both halves attached to it.
///
/// The memory is poisoned before the driver takes it over, so every test also checks that
/// `SplitRingDriver.init` really zeroes the shared parts.
final class RingFixture {
    let memory: SplitRingMemory
    let driver: SplitRingDriver
    let device: SplitRingDevice
    private let base: UnsafeMutableRawPointer

    init(size: Int, startIndex: UInt16 = 0) {
        let bytes = SplitRingMemory.bytesNeeded(size: size)
        base = .allocate(byteCount: bytes, alignment: 4096)
        base.initializeMemory(as: UInt8.self, repeating: 0xA5, count: bytes)
        memory = SplitRingMemory.place(at: base, size: size)
        driver = SplitRingDriver(memory: memory, startIndex: startIndex)
        device = SplitRingDevice(memory: memory, baseIndex: startIndex)
    }

    deinit {
        base.deallocate()
    }

    var size: Int { memory.size }

    /// The shared available index, as the driver last published it.
    var availIndex: UInt16 {
        get { cvs_avail_idx(memory.avail).pointee }
        set { cvs_avail_idx(memory.avail).pointee = newValue }
    }

    /// The shared used index, as the device last published it.
    var usedIndex: UInt16 {
        get { cvs_used_idx(memory.used).pointee }
        set { cvs_used_idx(memory.used).pointee = newValue }
    }

    /// Writes `head` into available-ring slot `position` (taken modulo the size).
    func setAvailEntry(at position: UInt16, head: UInt16) {
        cvs_avail_ring(memory.avail)[Int(position) & (size - 1)] = head
    }

    /// Writes a used element into used-ring slot `position` (taken modulo the size).
    func setUsedEntry(at position: UInt16, id: UInt32, length: UInt32) {
        cvs_used_ring(memory.used)[Int(position) & (size - 1)] = cvs_vring_used_elem(id: id, len: length)
    }

    /// Writes descriptor `index` directly, as a (possibly hostile) driver would.
    func setDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: Int32, next: UInt16 = 0) {
        memory.descriptors[index] = cvs_vring_desc(addr: address, len: length, flags: UInt16(flags), next: next)
    }
}

/// A small deterministic generator (SplitMix64), so shuffles are reproducible.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Reads one single-descriptor chain on the device side: head and its only segment.
func takeSingle(_ device: SplitRingDevice, file: StaticString = #filePath, line: UInt = #line) -> (head: UInt16, segment: ChainSegment)? {
    guard let head = device.takeAvailable() else {
        XCTFail("takeAvailable() returned nil: \(device.violation.map { "\($0)" } ?? "no violation")", file: file, line: line)
        return nil
    }
    var segment = ChainSegment(address: 0, length: 0, deviceWritable: false)
    let count = withUnsafeMutablePointer(to: &segment) { device.readChain(head: head, into: $0, capacity: 1) }
    guard count == 1 else {
        XCTFail("readChain(head: \(head)) returned \(String(describing: count)): \(device.violation.map { "\($0)" } ?? "no violation")", file: file, line: line)
        return nil
    }
    return (head, segment)
}

/// Asserts that `body` throws a `VirtioError` of the case `kind`; returns the error for further checks.
@discardableResult
func assertThrowsVirtioError<T>(
    _ kind: VirtioError.Domain,
    file: StaticString = #filePath, line: UInt = #line,
    _ body: () throws(VirtioError) -> T
) -> VirtioError? {
    do throws(VirtioError) {
        let value = try body()
        XCTFail("expected a .\(kind) error, got the value \(value)", file: file, line: line)
        return nil
    } catch {
        XCTAssertEqual(error.domain, kind, "unexpected error: \(error)", file: file, line: line)
        XCTAssertFalse(error.description.isEmpty, "error without a description", file: file, line: line)
        return error
    }
}
