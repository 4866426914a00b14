/// The device half of a virtqueue, split (§2.7) or packed (§2.8): what a back-end's data path
/// needs, so one forwarding loop, specialised per format, serves both.
///
/// A chain is named by a 16-bit token that ``peekAvailable(ahead:)`` returns and
/// ``readChain(head:into:capacity:)`` / ``putUsed(head:length:)`` take: the head descriptor's
/// index on a split ring, the chain's first slot on a packed one. Chains are used in the order
/// they were taken. Nothing read from the ring is trusted: a violation stops the ring and
/// ``violation`` says why.
@usableFromInline package protocol DeviceRing: AnyObject {
    /// The queue size.
    var size: Int { get }
    /// Set when the driver broke the ring protocol; the ring is unusable from then on.
    var violation: RingViolation? { get }
    /// VIRTIO_RING_F_EVENT_IDX negotiated. Set before the ring runs.
    var usesEventIndex: Bool { get set }
    /// What GET_VRING_BASE reports: where the device stopped taking chains.
    var vringBase: UInt32 { get }
    /// Asks the driver for kicks (true) or tells it not to bother (false); ordered before the
    /// caller's next look at the ring, so a kick cannot be missed between the two.
    func setNotificationsEnabled(_ enabled: Bool)
    /// How many chains the driver has made available and we have not taken.
    func availableCount() -> Int
    /// The chain `ahead` places past the next one, without taking it (`ahead` less than
    /// ``availableCount()``); nil, with ``violation`` set, when the ring names something invalid.
    func peekAvailable(ahead: Int) -> UInt16?
    /// Takes the next `count` chains ``peekAvailable(ahead:)`` returned.
    func skipAvailable(_ count: Int)
    /// Reads chain `head` into `segments` (at most `capacity`) and returns how many segments it
    /// has; nil, with ``violation`` set, when it is malformed, or uses an indirect table while
    /// `allowsIndirect` is false (VIRTIO_RING_F_INDIRECT_DESC not negotiated). `indirect` maps a
    /// table's driver address and byte length to local memory (nil when it is not all inside
    /// the shared memory). Most callers use one of the two forms below.
    func readChain(
        head: UInt16, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int,
        allowsIndirect: Bool, _ indirect: (_ address: UInt64, _ length: Int) -> UnsafeMutableRawPointer?
    ) -> Int?
    /// Returns chain `head` with `length` bytes written (unpublished until ``publishUsed()``).
    func putUsed(head: UInt16, length: UInt32)
    /// Publishes what ``putUsed(head:length:)`` returned since the last call, all at once, and
    /// reports whether the driver wants a used-buffer notification.
    func publishUsed() -> Bool
}

extension DeviceRing {
    /// Reads chain `head` with indirect tables refused (not negotiated).
    @inlinable
    package func readChain(head: UInt16, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int) -> Int? {
        readChain(head: head, into: segments, capacity: capacity, allowsIndirect: false) { _, _ in nil }
    }

    /// Reads chain `head` with indirect tables allowed, `indirect` mapping a table. (Not an
    /// optional closure: that would escape, and allocate per call.)
    @inlinable
    package func readChain(
        head: UInt16, into segments: UnsafeMutablePointer<ChainSegment>, capacity: Int,
        indirect: (_ address: UInt64, _ length: Int) -> UnsafeMutableRawPointer?
    ) -> Int? {
        readChain(head: head, into: segments, capacity: capacity, allowsIndirect: true, indirect)
    }
}
