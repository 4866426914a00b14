import SystemPackage

/// Why shared memory could not be had, or was taken away by the peer.
public enum MemoryFailure: Sendable, Equatable, CustomStringConvertible {
    /// `bytes` of `pageSize`-byte hugepages could not be had (`errno` from mmap or memfd_create).
    case hugepagesUnavailable(pageSize: Int, bytes: Int, errno: Errno)
    /// The peer punched a hole in our hugepage memory: an access raised SIGBUS (zero memory now
    /// stands in for it).
    case holePunched
    /// The peer shrank the file behind memory region `region` after handing it over.
    case regionShrunk(region: Int)
    /// The kernel could not read or write the peer's memory for us (it was unmapped or shrunk).
    case unreadable(what: String)
    /// A descriptor or table names `length` bytes at `address`, not inside the shared memory.
    case outsideSharedMemory(address: UInt64, length: Int)

    public var description: String {
        switch self {
        case .hugepagesUnavailable(let pageSize, let bytes, let errno):
            return "\(bytes) bytes of \(pageSize >> 20) MiB hugepages could not be had: \(errno.description) (errno \(errno.rawValue)). Reserve hugepages (echo N > /proc/sys/vm/nr_hugepages) or use normal pages."
        case .holePunched:
            return "The back-end punched a hole in the device's shared memory (an access raised SIGBUS; zero memory now stands in for it); the session is ended, and the next one gets fresh memory."
        case .regionShrunk(let region):
            return "The front-end shrank memory region \(region)'s file after SET_MEM_TABLE; its pages were touched past the new end. Front-ends must not truncate shared memory (seal memfds with F_SEAL_SHRINK); the session is closed."
        case .unreadable(let what):
            return "The kernel could not access \(what) in the peer's memory (it was unmapped or shrunk); the session is closed."
        case .outsideSharedMemory(let address, let length):
            return "A descriptor points outside the shared memory (0x\(String(address, radix: 16)), \(length) bytes); the session is closed."
        }
    }
}
