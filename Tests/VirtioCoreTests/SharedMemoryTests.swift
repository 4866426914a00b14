#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import XCTest

/// memfd-backed regions: size rounding, zeroing, sealing, sharing and the hugepage fallback.
final class SharedMemoryTests: XCTestCase {
    private let page = SharedMemoryRegion.systemPageSize

    func testOddSizeRoundsUpToWholePages() throws {
        let region = try SharedMemoryRegion(minimumSize: 3 * page + 1, name: "core-test")
        XCTAssertEqual(region.size, 4 * page)
        XCTAssertEqual(region.pageSize, page)
        XCTAssertEqual(region.backing, .memfd)
        XCTAssertNil(region.fallbackReason)
        XCTAssertEqual(Int(bitPattern: region.base) % page, 0)
        XCTAssertEqual(cvs_file_size(region.descriptor.raw), Int64(region.size), "the fd is valid and sized")
        XCTAssertNotEqual(fcntl(region.descriptor.raw, F_GETFD) & FD_CLOEXEC, 0, "the memfd is close-on-exec")
    }

    func testSmallSizeIsOnePage() throws {
        let region = try SharedMemoryRegion(minimumSize: 1)
        XCTAssertEqual(region.size, page)
        let exact = try SharedMemoryRegion(minimumSize: 2 * page)
        XCTAssertEqual(exact.size, 2 * page)
    }

    func testRegionIsZeroed() throws {
        let region = try SharedMemoryRegion(minimumSize: 5 * page + 17)
        let bytes = UnsafeRawBufferPointer(start: region.base, count: region.size)
        XCTAssertNil(bytes.firstIndex(where: { $0 != 0 }), "a fresh region must read as zeroes")
    }

    func testSizeIsSealed() throws {
        let region = try SharedMemoryRegion(minimumSize: 2 * page)
        let fd = region.descriptor.raw
        let shrink = ftruncate(fd, off_t(page))
        let shrinkErrno = errno
        XCTAssertEqual(shrink, -1, "shrinking a sealed memfd must fail")
        XCTAssertEqual(shrinkErrno, EPERM)
        let grow = ftruncate(fd, off_t(4 * page))
        let growErrno = errno
        XCTAssertEqual(grow, -1, "growing a sealed memfd must fail")
        XCTAssertEqual(growErrno, EPERM)
        XCTAssertEqual(cvs_file_size(fd), Int64(2 * page))
    }

    func testASecondMappingOfTheDescriptorSeesTheSameBytes() throws {
        let region = try SharedMemoryRegion(minimumSize: 2 * page)
        guard let other = cvs_mmap_shared(region.descriptor.raw, region.size, 0) else {
            return XCTFail("mmap of the region's fd failed: errno \(errno)")
        }
        defer { _ = cvs_munmap(other, region.size) }
        region.base.storeBytes(of: 0xDEAD_BEEF as UInt32, toByteOffset: page + 8, as: UInt32.self)
        XCTAssertEqual(other.load(fromByteOffset: page + 8, as: UInt32.self), 0xDEAD_BEEF)
        other.storeBytes(of: 42 as UInt8, toByteOffset: 0, as: UInt8.self)
        XCTAssertEqual(region.base.load(as: UInt8.self), 42)
    }

    func testInvalidSizesAreRefused() {
        // Sizes near Int.max once overflowed while rounding to the page size.
        for size in [0, -1, Int.min, Int.max, Int.max - 4096, SharedMemoryRegion.maximumSize + 1] {
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in try SharedMemoryRegion(minimumSize: size) }
        }
        for hugeSize in [0, -2 << 20, 3 << 20, 1024, page / 2, page + 1] {
            for fallback in [true, false] {
                assertThrowsVirtioError(.configuration) { () throws(VirtioError) in
                    try SharedMemoryRegion(minimumSize: page, backing: .hugepages(pageSize: hugeSize), fallbackToNormalPages: fallback)
                }
            }
        }
    }

    func testHugepagesWithFallbackWorkOrFallBack() throws {
        let region = try SharedMemoryRegion(minimumSize: 1 << 20, backing: .hugepages2M, fallbackToNormalPages: true)
        if region.backing == .hugepages2M {
            XCTAssertNil(region.fallbackReason)
            XCTAssertEqual(region.pageSize, 2 << 20)
            XCTAssertEqual(region.size, 2 << 20)
        } else {
            XCTAssertEqual(region.backing, .memfd)
            let reason = try XCTUnwrap(region.fallbackReason)
            XCTAssertTrue(reason.contains("nr_hugepages"), reason)
            XCTAssertEqual(region.pageSize, page)
            XCTAssertEqual(region.size, 1 << 20)
        }
        XCTAssertNil(UnsafeRawBufferPointer(start: region.base, count: region.size).firstIndex(where: { $0 != 0 }))
        XCTAssertEqual(cvs_file_size(region.descriptor.raw), Int64(region.size))
    }

    func testWithoutHugepagesTheFallbackIsTaken() throws {
        try XCTSkipUnless(HugepagePool.twoMegabytePoolIsEmpty, "this machine has 2 MiB hugepages reserved")
        let region = try SharedMemoryRegion(minimumSize: 4 * page, backing: .hugepages2M, fallbackToNormalPages: true)
        XCTAssertEqual(region.backing, .memfd)
        XCTAssertEqual(region.pageSize, page)
        XCTAssertEqual(region.size, 4 * page)
        XCTAssertNotNil(region.fallbackReason)
    }

    func testWithoutHugepagesAndWithoutFallbackItThrows() throws {
        try XCTSkipUnless(HugepagePool.twoMegabytePoolIsEmpty, "this machine has 2 MiB hugepages reserved")
        do throws(VirtioError) {
            let region = try SharedMemoryRegion(minimumSize: 4 * page, backing: .hugepages2M, fallbackToNormalPages: false)
            XCTFail("expected an error, got a region backed by \(region.backing)")
        } catch {
            guard case .memory(.hugepagesUnavailable(let pageSize, let bytes, _)) = error else {
                return XCTFail("expected .memory(.hugepagesUnavailable), got \(error)")
            }
            XCTAssertEqual(pageSize, 2 << 20)
            XCTAssertEqual(bytes, 4 * page)
            XCTAssertNotNil(error.errno)
            XCTAssertTrue(error.description.contains("nr_hugepages"), "the error should say how to reserve hugepages: \(error)")
        }
    }

    func testRoundUp() {
        XCTAssertEqual(SharedMemoryRegion.roundUp(0, to: 64), 0)
        XCTAssertEqual(SharedMemoryRegion.roundUp(1, to: 64), 64)
        XCTAssertEqual(SharedMemoryRegion.roundUp(64, to: 64), 64)
        XCTAssertEqual(SharedMemoryRegion.roundUp(65, to: 64), 128)
        XCTAssertEqual(SharedMemoryRegion.roundUp(4097, to: 4096), 8192)
    }

    func testBackingDescriptions() {
        XCTAssertTrue(MemoryBacking.memfd.description.hasPrefix("memfd"))
        XCTAssertEqual(MemoryBacking.hugepages2M.description, "hugetlb memfd (2 MiB pages)")
        XCTAssertEqual(MemoryBacking.hugepages2M, .hugepages(pageSize: 2_097_152))
    }
}

/// What the kernel's 2 MiB hugepage pool can supply.
enum HugepagePool {
    /// True when neither reserved nor overcommit 2 MiB hugepages exist.
    static var twoMegabytePoolIsEmpty: Bool {
        let directory = "/sys/kernel/mm/hugepages/hugepages-2048kB/"
        let reserved = readNumber(directory + "nr_hugepages") ?? readNumber("/proc/sys/vm/nr_hugepages") ?? 0
        let overcommit = readNumber(directory + "nr_overcommit_hugepages") ?? readNumber("/proc/sys/vm/nr_overcommit_hugepages") ?? 0
        return reserved == 0 && overcommit == 0
    }

    private static func readNumber(_ path: String) -> Int? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        return Int(String(decoding: buffer[0..<n].prefix(while: { (48...57).contains($0) }), as: UTF8.self))
    }
}
