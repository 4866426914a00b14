import VirtioCore

/// One packet buffer in the device's shared memory: a handle, not a copy.
///
/// A `PacketBuffer` is a plain value (a slot number, a pointer and a length): passing it around
/// costs no allocation or reference counting. It is valid from the moment the device hands it
/// out (``VirtioUserDevice/allocate(into:count:queue:)`` or ``VirtioUserDevice/receive(into:queue:)``)
/// until it goes back (``VirtioUserDevice/transmit(_:queue:)`` or ``VirtioUserDevice/release(_:queue:)``);
/// using it after that is a bug, like using freed memory.
///
/// A frame longer than one buffer (up to ``VirtioUserDevice/maximumChainedFrameLength``) is a
/// run of consecutive burst entries: the first has ``segments`` = n > 1, the next n − 1 have
/// ``segments`` = 0 (continuations). Received frames come that way when the back-end splits a
/// frame over several buffers (mergeable receive buffers); build transmitted ones the same way
/// and they go out as one descriptor chain.
public struct PacketBuffer {
    /// The slot in the pool.
    public let slot: UInt32
    /// Buffers in the frame this buffer starts: 1 for a frame in one buffer, n > 1 when the
    /// next n − 1 entries of the burst continue it, 0 for a continuation.
    public var segments: UInt16
    /// ``setOffload(_:)`` was called: transmit keeps the header instead of clearing it.
    @usableFromInline var hasOffload: Bool
    /// The first byte of this buffer's part of the frame (for the first segment, the Ethernet
    /// destination address).
    public let data: UnsafeMutableRawPointer
    /// Bytes of the frame in this buffer (without the virtio-net header). Set it before
    /// transmitting: at most ``VirtioUserDevice/maximumFrameLength`` in a first segment, and
    /// up to the end of the buffer in a continuation.
    public var length: Int

    @inlinable
    init(slot: UInt32, data: UnsafeMutableRawPointer, length: Int, segments: UInt16 = 1) {
        self.slot = slot
        self.segments = segments
        hasOffload = false
        self.data = data
        self.length = length
    }

    /// The offload fields of this frame's virtio-net header: on a received frame's first
    /// segment, what the back-end reported (with GUEST_CSUM / GUEST_TSO negotiated: a checksum
    /// still to fill in, or a large TCP frame to be segmented); after ``setOffload(_:)``, what
    /// was set. Meaningless on a continuation segment.
    @inlinable
    public var offload: VirtioNetOffload { VirtioNetOffload(header: data - VirtioNetHeader.size) }

    /// Asks for checksum or segmentation offload on transmit (first segment only). The features
    /// it needs (CSUM, HOST_TSO4/6: see `VirtioNetOffload.featuresNeededToSend`) must have
    /// been negotiated (``VirtioUserDevice/Configuration/offloads``), or transmit drops the
    /// frame and counts it.
    @inlinable
    public mutating func setOffload(_ offload: VirtioNetOffload) {
        offload.write(to: data - VirtioNetHeader.size)
        hasOffload = true
    }

    /// This buffer's bytes (`length` of them).
    @inlinable
    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: data, count: length) }
}
