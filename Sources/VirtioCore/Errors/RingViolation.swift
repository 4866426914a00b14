import SystemPackage

/// How the peer broke the virtqueue protocol in shared memory (virtio 1.2 §2.7, §2.8). The
/// ring stops at the first one; its fields are what was read.
///
/// Cases about the available ring and descriptor chains are the driver's (seen by a back-end);
/// cases about the used ring are the device's (seen by `VirtioUserDevice`).
public enum RingViolation: Sendable, Equatable, CustomStringConvertible {
    // The driver's (seen by the device side).
    /// The available index moved by `count` on a queue of `queueSize`.
    case availableIndexJump(count: Int, queueSize: Int)
    /// The available ring names `head`, outside a queue of `queueSize`.
    case headOutOfRange(head: Int, queueSize: Int)
    /// Descriptor (split) or slot (packed) `index` is indirect, which was not negotiated.
    case indirectNotNegotiated(index: Int)
    /// Descriptor or slot `index` is indirect inside a chain.
    case indirectInsideChain(index: Int)
    /// The chain from `head` is longer than `limit` descriptors (a loop?).
    case chainTooLong(head: Int, limit: Int)
    /// A descriptor links to `next`, outside a table of `entries`; `indirect` when the table is
    /// an indirect one.
    case linkOutOfRange(next: Int, entries: Int, indirect: Bool)
    /// An indirect table of `bytes` at `head` is not a multiple of 16 bytes with 1…`maximumEntries` entries.
    case indirectTableLength(head: Int, bytes: Int, maximumEntries: Int)
    /// An indirect table of `bytes` at `address` is not inside the shared memory.
    case indirectTableOutsideMemory(address: UInt64, bytes: Int)
    /// The indirect table at `head` names another indirect table.
    case nestedIndirect(head: Int)
    /// A packed chain from `slot` runs past the `limit` slots the driver can have filled.
    case chainPastAvailable(slot: Int, limit: Int)
    /// Packed slot `slot` continues a chain but is not available.
    case chainContinuesIntoUnavailable(slot: Int)

    // The device's (seen by the driver side).
    /// The used index moved by `count` with only `outstanding` buffers made available.
    case usedIndexJump(count: Int, outstanding: Int)
    /// A used entry names descriptor `id`, which does not head a buffer in flight (`slot`: the
    /// packed ring's slot, nil on a split ring).
    case usedIdNotInFlight(id: Int, slot: Int?)
    /// Under IN_ORDER, a used entry names descriptor `id` out of order; `perBuffer` when the
    /// queue (receive) needs an entry per buffer.
    case usedOutOfOrder(id: Int, perBuffer: Bool)
    /// Under IN_ORDER, descriptor `id` is still in flight when it should be next.
    case inOrderStillInFlight(id: Int)
    /// A packed used descriptor at `slot` (id `id`, `slots` slots) runs past the `published` slots.
    case usedPastPublished(slot: Int, id: Int, slots: Int, published: Int)
    /// Two used descriptors name `id`.
    case usedTwice(id: Int)
    /// A receive header's `num_buffers` is `value`, with `posted` buffers posted.
    case numBuffers(value: Int, posted: Int)

    // Either side's: the peer's notifications.
    /// A kick or call could not be delivered: the peer cleared O_NONBLOCK on our eventfd and filled its
    /// counter, so the write would have blocked.
    case kickBlocked(milliseconds: Int)
    /// A kick could not be delivered: writing the eventfd failed with `errno` (the device's
    /// ring stops on it).
    case kickFailed(errno: Errno)

    public var description: String {
        switch self {
        case .availableIndexJump(let count, let size):
            "The driver broke the ring protocol: the available index jumped by \(count) on a queue of \(size)."
        case .headOutOfRange(let head, let size):
            "The driver broke the ring protocol: the available ring names descriptor \(head) on a queue of \(size)."
        case .indirectNotNegotiated(let index):
            "The driver broke the ring protocol: descriptor \(index) is indirect, which was not negotiated."
        case .indirectInsideChain(let index):
            "The driver broke the ring protocol: descriptor \(index) is indirect inside a chain."
        case .chainTooLong(let head, let limit):
            "The driver broke the ring protocol: the chain from head \(head) is longer than \(limit) descriptors (a loop?)."
        case .linkOutOfRange(let next, let entries, let indirect):
            "The driver broke the ring protocol: \(indirect ? "an indirect" : "a") descriptor links to \(next) in a table of \(entries)."
        case .indirectTableLength(let head, let bytes, let maximum):
            "The driver broke the ring protocol: the indirect table of \(bytes) bytes at head \(head) is not a multiple of 16 bytes with 1…\(maximum) entries."
        case .indirectTableOutsideMemory(let address, let bytes):
            "The driver broke the ring protocol: the indirect table at 0x\(String(address, radix: 16)) (\(bytes) bytes) is not inside the shared memory."
        case .nestedIndirect(let head):
            "The driver broke the ring protocol: the indirect table at head \(head) nests another indirect table."
        case .chainPastAvailable(let slot, let limit):
            "The driver broke the packed-ring protocol: the chain from slot \(slot) runs past the \(limit) slots the driver can have filled."
        case .chainContinuesIntoUnavailable(let slot):
            "The driver broke the packed-ring protocol: slot \(slot) continues a chain but is not available."
        case .usedIndexJump(let count, let outstanding):
            "The device broke the ring protocol: the used index advanced by \(count) with only \(outstanding) buffers made available."
        case .usedIdNotInFlight(let id, let slot):
            "The device broke the ring protocol: a used entry\(slot.map { " at slot \($0)" } ?? "") names descriptor \(id), which does not head a buffer in flight."
        case .usedOutOfOrder(let id, let perBuffer):
            "The device broke the ring protocol: a used entry names descriptor \(id), out of order under IN_ORDER\(perBuffer ? " (a receive queue needs an entry per buffer)" : "")."
        case .inOrderStillInFlight(let id):
            "The device broke the ring protocol: descriptor \(id) is still in flight when IN_ORDER says it is next (buffers were used out of order)."
        case .usedPastPublished(let slot, let id, let slots, let published):
            "The device broke the packed-ring protocol: the used descriptor at slot \(slot) (id \(id), \(slots) slots) runs past the \(published) slots published."
        case .usedTwice(let id):
            "The device broke the packed-ring protocol: two used descriptors name id \(id)."
        case .numBuffers(let value, let posted):
            "The device broke the ring protocol: num_buffers \(value) in a receive header, with \(posted) buffers posted."
        case .kickBlocked(let milliseconds):
            "A write to the peer's eventfd blocked for \(milliseconds) ms: the peer cleared O_NONBLOCK on it and filled its counter."
        case .kickFailed(let errno):
            "Signalling the peer's eventfd failed: \(errno.description) (errno \(errno.rawValue))."
        }
    }
}
