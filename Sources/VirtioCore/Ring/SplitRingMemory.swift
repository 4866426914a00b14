import CVirtioShim

/// Where the three parts of one split virtqueue (VIRTIO 1.1 §2.7) sit in memory.
///
/// Both halves of a ring see only this: raw memory and a size. Neither knows about sockets,
/// eventfds or vhost-user.
@usableFromInline package struct SplitRingMemory {
    /// Queue size: a power of two from 1 to ``maximumSize``.
    @usableFromInline package let size: Int
    /// The descriptor table (`size` entries).
    @usableFromInline package let descriptors: UnsafeMutablePointer<cvs_vring_desc>
    /// The available ring (driver → device).
    @usableFromInline package let avail: UnsafeMutableRawPointer
    /// The used ring (device → driver).
    @usableFromInline package let used: UnsafeMutableRawPointer

    /// The largest split queue size the spec allows.
    @usableFromInline package static let maximumSize = 32768

    /// Creates a view over three parts placed by a peer (the backend's case).
    @usableFromInline package init(size: Int, descriptors: UnsafeMutableRawPointer, avail: UnsafeMutableRawPointer, used: UnsafeMutableRawPointer) {
        self.size = size
        self.descriptors = descriptors.assumingMemoryBound(to: cvs_vring_desc.self)
        self.avail = avail
        self.used = used
    }

    /// True for 1, 2, 4 … 32768.
    @inlinable
    package static func isValidSize(_ size: Int) -> Bool {
        size > 0 && size <= maximumSize && size & (size - 1) == 0
    }

    /// Bytes one ring of `size` entries needs with ``place(at:size:)``'s layout.
    @usableFromInline package static func bytesNeeded(size: Int) -> Int {
        usedOffset(size: size) + SharedMemoryRegion.roundUp(cvs_vring_used_bytes(UInt32(size)), to: 64)
    }

    /// Lays a ring out at `base` (64-byte aligned): descriptor table, then the available ring,
    /// then the used ring on its own cache lines so the two writers never share one.
    @usableFromInline package static func place(at base: UnsafeMutableRawPointer, size: Int) -> SplitRingMemory {
        let availOffset = cvs_vring_desc_bytes(UInt32(size))
        return SplitRingMemory(
            size: size,
            descriptors: base,
            avail: base + availOffset,
            used: base + usedOffset(size: size)
        )
    }

    private static func usedOffset(size: Int) -> Int {
        let availEnd = cvs_vring_desc_bytes(UInt32(size)) + cvs_vring_avail_bytes(UInt32(size))
        return SharedMemoryRegion.roundUp(availEnd, to: 64)
    }
}
