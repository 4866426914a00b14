#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import Foundation
import VirtioCore
import XCTest

/// The SIGBUS guard over memory a peer may shrink: however many pages are touched after the
/// file shrank, the process survives, and the number of mappings stays where it was.
final class TruncationGuardTests: XCTestCase {
    func testTouchingEveryPageOfAShrunkFileCostsOneReplacement() throws {
        let size = 64 << 20
        let fd = cvs_memfd_create("guard-test", 0x0001)  // MFD_CLOEXEC, not sealed: it can shrink
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
        let mapping = try XCTUnwrap(cvs_mmap_shared(fd, size, 0))
        defer { _ = cvs_munmap(mapping, size) }
        let slot = cvs_guard_register(mapping, size)
        XCTAssertGreaterThanOrEqual(slot, 0)
        defer { cvs_guard_unregister(slot) }
        XCTAssertEqual(mappings(overlapping: mapping, size), 1)

        XCTAssertEqual(ftruncate(fd, 0), 0)  // every page of the mapping is now past the end
        // A page at a time with gaps between: each would split the mapping under a per-page
        // replacement (16,384 faults, up to twice as many new mappings).
        var sum = 0
        for page in stride(from: 0, to: size, by: 8192) {
            sum &+= Int(mapping.load(fromByteOffset: page, as: UInt8.self))
            mapping.storeBytes(of: 7, toByteOffset: page + 4096, as: UInt8.self)
        }
        XCTAssertEqual(sum, 0, "replaced memory reads as zeros")
        XCTAssertEqual(cvs_guard_faults(slot), 1, "one replacement for the whole range")
        XCTAssertEqual(mappings(overlapping: mapping, size), 1, "the replacement split nothing")
    }

    /// Mappings in /proc/self/maps that overlap `size` bytes at `start`: only the guarded range,
    /// since the process's own count moves with whatever else maps memory meanwhile (in CI's
    /// AddressSanitizer pass something did, and the whole-process count was off by one).
    private func mappings(overlapping start: UnsafeMutableRawPointer, _ size: Int) -> Int {
        let lower = UInt(bitPattern: start)
        let upper = lower + UInt(size)
        guard let maps = Self.procSelfMaps() else { return -1 }
        return maps.split(separator: "\n").filter { line in
            let bounds = line.prefix { $0 != " " }.split(separator: "-")
            guard bounds.count == 2, let low = UInt(bounds[0], radix: 16), let high = UInt(bounds[1], radix: 16) else { return false }
            return low < upper && high > lower
        }.count
    }

    /// /proc/self/maps read to its end with read(2): the file reports a size of 0, and a reader
    /// that trusts the size can stop short (in the ThreadSanitizer pass, whose process has many
    /// more mappings, the guarded range was not in what Foundation returned).
    private static func procSelfMaps() -> String? {
        let fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { return nil }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
