#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VhostUser
import VirtioCore

/// One front-end region mapped into this process.
final class MappedRegion {
    let guestPhysicalAddress: UInt64
    let userAddress: UInt64
    let size: UInt64
    /// Our address of the region's first byte.
    let host: UnsafeMutableRawPointer
    private let mapping: UnsafeMutableRawPointer
    private let mappingLength: Int
    /// Our truncation-guard slot: a front-end that shrinks the file later turns the mapping into
    /// zero memory, not SIGBUS into the process (see `cvs_guard_register`).
    private let guardSlot: Int32

    /// Maps `descriptor` after checking the region against the file: offset + size must lie
    /// within the file as fstat reports it (mapping past the end would turn a later access
    /// into SIGBUS), and no address range may wrap around.
    init(_ region: MemoryRegionDescriptor, descriptor: OwnedDescriptor) throws(VirtioError) {
        let (gpaEnd, gpaOverflow) = region.guestPhysicalAddress.addingReportingOverflow(region.size)
        let (uaEnd, uaOverflow) = region.userAddress.addingReportingOverflow(region.size)
        let (fileEnd, offsetOverflow) = region.mmapOffset.addingReportingOverflow(region.size)
        _ = (gpaEnd, uaEnd)
        guard region.size > 0, !gpaOverflow, !uaOverflow, !offsetOverflow, fileEnd <= UInt64(Int.max) else {
            throw .peerProtocol(.badMemoryTable(problem: "a region (size \(region.size), offset \(region.mmapOffset)) is empty or wraps around the address space"))
        }
        let fileSize = cvs_file_size(descriptor.raw)
        guard fileSize >= 0 else {
            throw VirtioError.system("fstat of a memory-region fd", errno: errno)
        }
        guard fileEnd <= UInt64(fileSize) else {
            throw .peerProtocol(.badMemoryTable(problem: "a region ends at byte \(fileEnd) of its file, which has only \(fileSize) bytes"))
        }
        // Map from offset 0 (mmap offsets must be page aligned; region offsets need not be),
        // rounded to the file system's page size: the hugepage size on hugetlbfs, which
        // fstatfs reports (st_blksize is only an I/O size hint).
        var block = UInt64(SharedMemoryRegion.systemPageSize)
        let pageSize = cvs_file_system_page_size(descriptor.raw)
        if pageSize > 0, pageSize & (pageSize - 1) == 0 { block = max(block, UInt64(pageSize)) }
        let length = min((fileEnd + block - 1) & ~(block - 1), UInt64(fileSize))
        guard let mapping = cvs_mmap_shared(descriptor.raw, Int(length), 0) else {
            throw VirtioError.system("mmap of a \(length)-byte memory region", errno: errno)
        }
        let slot = cvs_guard_register(mapping, Int(length))
        guard slot >= 0 else {
            let code = errno
            _ = cvs_munmap(mapping, Int(length))
            throw VirtioError.system("guarding a \(length)-byte memory region against truncation", errno: code)
        }
        guardSlot = slot
        guestPhysicalAddress = region.guestPhysicalAddress
        userAddress = region.userAddress
        size = region.size
        self.mapping = mapping
        mappingLength = Int(length)
        host = mapping + Int(region.mmapOffset)
    }

    deinit {
        cvs_guard_unregister(guardSlot)
        _ = cvs_munmap(mapping, mappingLength)
    }

    /// True once the front-end shrank the file under a page we touched.
    var wasTruncated: Bool { cvs_guard_faults(guardSlot) > 0 }
}

/// The front-end's memory as we mapped it, with bounds-checked translation of its addresses.
///
/// Every address a front-end gives us (ring addresses in its virtual space, buffer addresses in
/// "guest physical" space) is translated only if the whole range `[address, address + length)`
/// lies inside one region; anything else is refused, so a peer can never make us touch memory
/// that is not its own.
package final class GuestMemoryMap {
    private(set) var regions: [MappedRegion] = []
    // Flat copies of the region bounds for the hot path (no ARC, no array bounds checks).
    private let starts: UnsafeMutablePointer<UInt64>
    private let sizes: UnsafeMutablePointer<UInt64>
    private let hosts: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private var count = 0

    package init() {
        starts = .allocate(capacity: MemoryRegionDescriptor.maximumCount)
        sizes = .allocate(capacity: MemoryRegionDescriptor.maximumCount)
        hosts = .allocate(capacity: MemoryRegionDescriptor.maximumCount)
    }

    deinit {
        starts.deallocate()
        sizes.deallocate()
        hosts.deallocate()
    }

    /// Most bytes one session's regions may span together. Mappings cost only address space,
    /// but a process has 128 TiB of it: without a cap, one front-end's sparse terabyte files
    /// would leave none for a switch's other ports. 1 TiB covers any guest QEMU runs here, and
    /// 64 ports at the cap fit.
    static let maximumBytes: UInt64 = 1 << 40

    /// Maps a new table, replacing the old one only if every region is valid: sizes within
    /// their files and, together, within ``maximumBytes``; no overlaps in either address space.
    package func replace(with table: [MemoryRegionDescriptor], descriptors: [OwnedDescriptor]) throws(VirtioError) {
        guard table.count == descriptors.count, table.count <= MemoryRegionDescriptor.maximumCount else {
            throw .peerProtocol(.badMemoryTable(problem: "\(table.count) regions and \(descriptors.count) fds; they must match, at most \(MemoryRegionDescriptor.maximumCount)"))
        }
        var total: UInt64 = 0
        for region in table {
            let (sum, overflow) = total.addingReportingOverflow(region.size)
            guard !overflow, sum <= Self.maximumBytes else {
                throw .peerProtocol(.badMemoryTable(problem: "the regions span more than \(Self.maximumBytes >> 30) GiB together, the most one session may map"))
            }
            total = sum
        }
        for i in table.indices {
            for j in table.indices where j > i {
                if overlaps(table[i].guestPhysicalAddress, table[i].size, table[j].guestPhysicalAddress, table[j].size)
                    || overlaps(table[i].userAddress, table[i].size, table[j].userAddress, table[j].size) {
                    throw .peerProtocol(.badMemoryTable(problem: "regions \(i) and \(j) overlap"))
                }
            }
        }
        var mapped: [MappedRegion] = []
        for (region, descriptor) in zip(table, descriptors) {
            mapped.append(try MappedRegion(region, descriptor: descriptor))
        }
        regions = mapped
        count = mapped.count
        for (i, region) in mapped.enumerated() {
            starts[i] = region.guestPhysicalAddress
            sizes[i] = region.size
            hosts[i] = region.host
        }
    }

    /// Drops every mapping.
    func clear() {
        regions = []
        count = 0
    }

    var isEmpty: Bool { count == 0 }

    /// A protocol violation when the front-end shrank a region's file after we mapped it (the
    /// pages past its new end now read as zeros; the session must end).
    func checkTruncation() throws(VirtioError) {
        for (i, region) in regions.enumerated() where region.wasTruncated {
            throw .memory(.regionShrunk(region: i))
        }
    }

    /// Our pointer for the driver buffer `[address, address + length)` ("guest physical"), or nil
    /// when it is not entirely inside one region.
    @inline(__always)
    func translate(guestPhysical address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        var i = 0
        while i < count {
            let offset = address &- starts[i]
            if address >= starts[i], offset <= sizes[i], length <= sizes[i] &- offset {
                return hosts[i].map { $0 + Int(offset) }
            }
            i &+= 1
        }
        return nil
    }

    /// Our pointer for a descriptor's buffer; a protocol violation when it is not entirely
    /// inside one region.
    @inline(__always)
    func translate(_ segment: ChainSegment) throws(VirtioError) -> UnsafeMutableRawPointer {
        guard let pointer = translate(guestPhysical: segment.address, length: UInt64(segment.length)) else {
            throw .memory(.outsideSharedMemory(address: segment.address, length: Int(segment.length)))
        }
        return pointer
    }

    /// Our pointer for a ring part at front-end virtual `address` spanning `length` bytes.
    func translate(user address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        for region in regions {
            let offset = address &- region.userAddress
            if address >= region.userAddress, offset <= region.size, length <= region.size &- offset {
                return region.host + Int(offset)
            }
        }
        return nil
    }

    private func overlaps(_ a: UInt64, _ aSize: UInt64, _ b: UInt64, _ bSize: UInt64) -> Bool {
        a < b &+ bSize && b < a &+ aSize
    }
}
