/// The driver half of a virtqueue, split (§2.7) or packed (§2.8): what a device's receive and
/// transmit queues need, so their burst loops are written once and specialised per format.
///
/// Buffers carry a 32-bit cookie of the caller's (never `UInt32.max`) that comes back with
/// them. Nothing read from the ring is trusted: a violation stops the ring and ``violation``
/// says why (readable from any thread).
@usableFromInline package protocol DriverRing: AnyObject {
    /// The queue size.
    var size: Int { get }
    /// Descriptors free to add buffers with.
    var freeDescriptors: Int { get }
    /// Descriptors handed to the device and not yet returned.
    var inFlight: Int { get }
    /// Set when the device broke the ring protocol.
    var violation: RingViolation? { get }
    /// What SET_VRING_BASE announces for this ring.
    var vringBase: UInt32 { get }
    /// VIRTIO_RING_F_EVENT_IDX in force; set before the ring runs.
    var usesEventIndex: Bool { get set }
    /// Indirect descriptors in force; set before the ring runs.
    var usesIndirect: Bool { get set }
    /// One single-descriptor buffer, unpublished until ``publish()``; false when full.
    @discardableResult
    func add(address: UInt64, length: UInt32, deviceWritable: Bool, cookie: UInt32) -> Bool
    /// One buffer of `count` parts, `segment(i)` giving each; false, adding nothing, when full.
    @discardableResult
    func addChain(count: Int, deviceWritable: Bool, _ segment: (Int) -> (address: UInt64, length: UInt32, cookie: UInt32)) -> Bool
    /// Makes what was added visible; true when the device wants a kick.
    func publish() -> Bool
    /// How many used buffers are ready to take.
    func usedCount() -> Int
    /// The used buffer `ahead` places on, without taking it: first cookie, bytes written.
    func peekUsed(ahead: Int) -> (cookie: UInt32, length: UInt32)?
    /// Takes the buffer ``peekUsed(ahead:)`` (0) just returned.
    func skipPeekedUsed()
    /// Takes the next used buffer; `eachTail` gets the cookies of its other parts.
    func takeUsed(_ eachTail: (UInt32) -> Void) -> (cookie: UInt32, length: UInt32)?
    /// Takes every used buffer whose length does not matter (transmit completions), giving
    /// `each` every cookie of each; returns the buffers taken.
    func takeCompletions(_ each: (UInt32) -> Void) -> Int
    /// Asks for used-buffer notifications (true) or not; ordered before the next look.
    func setInterruptsEnabled(_ enabled: Bool)
    /// Every buffer in flight back to `body`, freed (teardown).
    func reclaimAll(_ body: (UInt32) -> Void)
    /// Stops the ring for a violation its user found.
    func reportViolation(_ cause: RingViolation)
}

extension DriverRing {
    /// Takes the used buffers one entry at a time, each read and checked, giving `each` every
    /// cookie of each; returns the buffers taken (stops at a violation).
    @inlinable
    package func takeEachUsed(_ each: (UInt32) -> Void) -> Int {
        let count = usedCount()
        var taken = 0
        while taken < count {
            guard let (cookie, _) = takeUsed(each) else { break }
            each(cookie)
            taken &+= 1
        }
        return taken
    }
}

extension SplitRingDriver: DriverRing {
    @usableFromInline package var vringBase: UInt32 { UInt32(startIndex) }
}

extension PackedRingDriver: DriverRing {}
