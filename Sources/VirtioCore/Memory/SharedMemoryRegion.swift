#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import SystemPackage

/// Where shared memory comes from.
public enum MemoryBacking: Sendable, Equatable, CustomStringConvertible {
    /// An anonymous memfd with normal pages: no root, no hugepages, no mount needed.
    case memfd
    /// A hugetlb memfd with pages of `pageSize` bytes (2 MiB or 1 GiB on x86_64). Needs
    /// hugepages reserved in /proc/sys/vm/nr_hugepages (or the 1 GiB pool).
    case hugepages(pageSize: Int)

    /// 2 MiB hugepages, the usual x86_64 size.
    public static let hugepages2M = MemoryBacking.hugepages(pageSize: 2 << 20)

    public var description: String {
        switch self {
        case .memfd: return "memfd (\(SharedMemoryRegion.systemPageSize / 1024) KiB pages)"
        case .hugepages(let size): return "hugetlb memfd (\(size >> 20) MiB pages)"
        }
    }
}

/// One shared memory region owned by this process: the file descriptor a peer maps and our own
/// mapping of it. Rings and packet buffers of a device all live in one region, so the vhost-user
/// memory table has exactly one entry whatever the page size.
///
/// `@unchecked Sendable`: every stored property is immutable after `init`; the memory it points
/// to is shared by design, and who may touch which part of it is the rings' business.
@usableFromInline package final class SharedMemoryRegion: @unchecked Sendable {
    /// Start of our mapping. Also used as the region's "guest physical" address: like DPDK's
    /// virtio-user, we hand our own virtual addresses to the backend.
    @usableFromInline package let base: UnsafeMutableRawPointer
    /// Mapped size in bytes, a multiple of ``pageSize``.
    @usableFromInline package let size: Int
    /// The memfd a peer maps (sent with SET_MEM_TABLE).
    @usableFromInline package let descriptor: OwnedDescriptor
    /// The backing actually in use (after any fallback).
    @usableFromInline package let backing: MemoryBacking
    /// Page size of the backing.
    @usableFromInline package let pageSize: Int
    /// Why the requested backing was not used, when a fallback happened.
    @usableFromInline package let fallbackReason: String?
    /// The NUMA node the pages were bound to, or nil without NUMA support.
    @usableFromInline package let numaNode: Int?
    /// The memfd's name, for ``renew()``.
    private let name: String

    /// The largest region this type creates (1 TiB): far beyond any ring and pool, and small
    /// enough that rounding to any page size cannot overflow.
    @usableFromInline package static let maximumSize = 1 << 40

    /// The system's normal page size.
    @usableFromInline package static var systemPageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }

    /// Creates and maps a region of at least `minimumSize` bytes.
    ///
    /// - Parameters:
    ///   - minimumSize: bytes needed; rounded up to the page size.
    ///   - backing: where the memory comes from.
    ///   - fallbackToNormalPages: with `.hugepages`, use normal pages (and say why in
    ///     ``fallbackReason``) when the hugepage pool cannot supply the region.
    ///   - name: the memfd's name, visible in /proc/PID/maps.
    @usableFromInline package init(
        minimumSize: Int,
        backing: MemoryBacking = .memfd,
        fallbackToNormalPages: Bool = true,
        name: String = "virtio-user"
    ) throws(VirtioError) {
        self.name = name
        guard minimumSize > 0, minimumSize <= Self.maximumSize else {
            throw .invalid("memory size", minimumSize, "a shared memory region takes 1…\(Self.maximumSize) bytes")
        }
        switch backing {
        case .memfd:
            let mapped = try Self.map(size: minimumSize, pageSize: Self.systemPageSize, flags: 0, name: name)
            (base, size, descriptor, numaNode) = mapped
            self.backing = .memfd
            pageSize = Self.systemPageSize
            fallbackReason = nil
        case .hugepages(let hugeSize):
            guard hugeSize > 0, hugeSize & (hugeSize - 1) == 0, hugeSize >= Self.systemPageSize else {
                throw .invalid("hugepage size", hugeSize, "a power of two ≥ the page size; use 2 MiB (2097152) or 1 GiB")
            }
            let shift = UInt32(hugeSize.trailingZeroBitCount)
            let flags = UInt32(CVS_MEMFD_HUGETLB) | (shift << UInt32(CVS_MEMFD_HUGE_SHIFT))
            do {
                let mapped = try Self.map(size: minimumSize, pageSize: hugeSize, flags: flags, name: name)
                (base, size, descriptor, numaNode) = mapped
                self.backing = backing
                pageSize = hugeSize
                fallbackReason = nil
            } catch {
                guard fallbackToNormalPages else {
                    throw .memory(.hugepagesUnavailable(pageSize: hugeSize, bytes: minimumSize, errno: error.errno ?? .noMemory))
                }
                let mapped = try Self.map(size: minimumSize, pageSize: Self.systemPageSize, flags: 0, name: name)
                (base, size, descriptor, numaNode) = mapped
                self.backing = .memfd
                pageSize = Self.systemPageSize
                fallbackReason = "\(hugeSize >> 20) MiB hugepages could not back \(minimumSize) bytes, so normal pages are used. \(error.description) Reserve hugepages with: echo N > /proc/sys/vm/nr_hugepages"
            }
        }
    }

    deinit {
        _ = cvs_munmap(base, size)
    }

    /// Round `value` up to a multiple of `alignment` (a power of two).
    @inlinable
    package static func roundUp(_ value: Int, to alignment: Int) -> Int {
        (value + alignment - 1) & ~(alignment - 1)
    }

    /// Replaces the pages behind the mapping with those of a fresh file of the same backing,
    /// at the same address (every pointer into the region stays valid) and under the same fd
    /// number (whatever holds ``descriptor`` now refers to the new file). A peer that mapped
    /// the old file keeps only the old pages, so it sees nothing written from here on. The
    /// contents start zeroed. Call only while nothing else reads or writes the region.
    @usableFromInline package func renew() throws(VirtioError) {
        let flags: UInt32
        switch backing {
        case .memfd:
            flags = 0
        case .hugepages(let hugeSize):
            flags = UInt32(CVS_MEMFD_HUGETLB) | (UInt32(hugeSize.trailingZeroBitCount) << UInt32(CVS_MEMFD_HUGE_SHIFT))
        }
        let file = try Self.createFile(size: size, flags: flags, name: name)
        if flags != 0 {
            // Hugepages are mapped aside first: a shortage fails here (ENOMEM), while the old
            // mapping is still whole. (The old pages and the new ones coexist for a moment, so
            // renewing needs twice the region in free hugepages.) The fixed mapping below then
            // maps the pages already allocated.
            guard let aside = cvs_mmap_shared_populated(file.raw, nil, size) else {
                // Renewing needs as many free hugepages as the region takes.
                throw .memory(.hugepagesUnavailable(pageSize: pageSize, bytes: size, errno: Errno(rawValue: errno)))
            }
            _ = cvs_munmap(aside, size)
        }
        guard cvs_mmap_shared_populated(file.raw, base, size) != nil else {
            let code = errno
            // A failed fixed mapping may have removed the old one: put the old file back.
            _ = cvs_mmap_shared_populated(descriptor.raw, base, size)
            throw VirtioError.system("mmap of a fresh region over the old one", errno: code)
        }
        guard cvs_dup_onto(file.raw, descriptor.raw) >= 0 else {
            let code = errno
            // The fd still names the old file: map it back, or the next peer would map a file
            // that is not the one behind our addresses.
            _ = cvs_mmap_shared_populated(descriptor.raw, base, size)
            throw VirtioError.system("dup3 of a fresh region's memfd", errno: code)
        }
    }

    /// A sealed memfd of `size` bytes.
    private static func createFile(size: Int, flags: UInt32, name: String) throws(VirtioError) -> OwnedDescriptor {
        let what = flags == 0 ? "memfd_create" : "memfd_create(MFD_HUGETLB)"
        let fd = OwnedDescriptor(taking: try SystemCall.run(what) {
            cvs_memfd_create(name, UInt32(CVS_MEMFD_DEFAULT) | flags)
        })
        _ = try SystemCall.run("ftruncate(\(size) bytes)") { ftruncate(fd.raw, off_t(size)) }
        // Seal the size so that no one holding the fd (the peer included) can shrink the file
        // under our mapping and turn our next access into SIGBUS. Without the seal we refuse
        // the region (a hugetlb request then falls back to normal pages, which can be sealed).
        _ = try SystemCall.run("sealing the memfd") { cvs_memfd_seal_size(fd.raw) }
        return fd
    }

    private static func map(
        size minimumSize: Int, pageSize: Int, flags: UInt32, name: String
    ) throws(VirtioError) -> (UnsafeMutableRawPointer, Int, OwnedDescriptor, Int?) {
        let size = roundUp(minimumSize, to: pageSize)
        let what = flags == 0 ? "memfd_create" : "memfd_create(MFD_HUGETLB)"
        let fd = try createFile(size: size, flags: flags, name: name)
        // Hugetlb memfds accept ftruncate even when the pool is too small; mmap is where the
        // shortage shows (ENOMEM), so that is where a fallback decision is made.
        guard let base = cvs_mmap_shared(fd.raw, size, 0) else {
            let code = errno
            throw VirtioError.system("mmap of \(size) bytes (\(what))", errno: code)
        }
        let node = cvs_numa_bind_local(base, size)
        // Touch every page now: a hugepage shortage then fails here, as an error we can
        // report, instead of as SIGBUS in the middle of traffic.
        memset(base, 0, size)
        return (base, size, fd, node >= 0 ? Int(node) : nil)
    }
}
