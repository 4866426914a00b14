/// VIRTIO_RING_F_EVENT_IDX's one rule (VIRTIO 1.1 §2.7.10, the spec's `vring_need_event`):
/// notify when the index moved from `old` to `new` past `event`, in 16-bit wrapping
/// arithmetic.
@usableFromInline package enum RingEvent {
    @inlinable
    package static func needed(event: UInt16, new: UInt16, old: UInt16) -> Bool {
        new &- event &- 1 < new &- old
    }
}
