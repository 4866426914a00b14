import VirtioCore

/// One packet buffer in the device's shared memory: a handle, not a copy.
///
/// A `PacketBuffer` is a plain value (a slot number, a pointer and a length): passing it around
/// costs no allocation or reference counting. It is valid from the moment the device hands it
/// out (``VirtioUserDevice/allocate(into:count:)`` or ``VirtioUserDevice/receive(into:)``) until
/// it goes back (``VirtioUserDevice/transmit(_:)`` or ``VirtioUserDevice/release(_:)``); using it
/// after that is a bug, like using freed memory.
public struct PacketBuffer {
    /// The slot in the pool.
    public let slot: UInt32
    /// The first byte of the frame (the Ethernet destination address).
    public let data: UnsafeMutableRawPointer
    /// Frame length in bytes (without the virtio-net header). Set it before transmitting; at
    /// most ``VirtioUserDevice/maximumFrameLength``.
    public var length: Int

    @inlinable
    init(slot: UInt32, data: UnsafeMutableRawPointer, length: Int) {
        self.slot = slot
        self.data = data
        self.length = length
    }

    /// The frame's bytes (`length` of them).
    @inlinable
    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: data, count: length) }
}
