/// The first 12 bytes of the virtio-net device configuration space (VIRTIO 1.1 §5.1.4:
/// `struct virtio_net_config`), little-endian: the fields a vhost-user back-end serves with
/// GET_CONFIG.
@usableFromInline package struct VirtioNetConfig: Sendable, Equatable {
    /// `mac`, valid with VIRTIO_NET_F_MAC (offset 0).
    @usableFromInline package var macAddress: MACAddress
    /// `status` (offset 6), valid with VIRTIO_NET_F_STATUS: bit 0 link up, bit 1 announce.
    @usableFromInline package var status: UInt16
    /// `max_virtqueue_pairs` (offset 8), valid with VIRTIO_NET_F_MQ.
    @usableFromInline package var maxQueuePairs: UInt16
    /// `mtu` (offset 10), valid with VIRTIO_NET_F_MTU.
    @usableFromInline package var mtu: UInt16

    /// VIRTIO_NET_S_LINK_UP.
    @usableFromInline package static let linkUp: UInt16 = 1

    /// Bytes of the fields above.
    @usableFromInline package static let byteCount = 12

    @usableFromInline package init(macAddress: MACAddress, status: UInt16, maxQueuePairs: UInt16, mtu: UInt16) {
        self.macAddress = macAddress
        self.status = status
        self.maxQueuePairs = maxQueuePairs
        self.mtu = mtu
    }

    /// Decodes the 12 bytes; nil when fewer are given.
    @usableFromInline package init?(bytes: [UInt8]) {
        guard bytes.count >= Self.byteCount else { return nil }
        func u16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
        macAddress = MACAddress(bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5])
        status = u16(6)
        maxQueuePairs = u16(8)
        mtu = u16(10)
    }

    /// The 12 bytes.
    @usableFromInline package var bytes: [UInt8] {
        var result = [UInt8](repeating: 0, count: Self.byteCount)
        let mac = macAddress.bytes
        result[0] = mac.0; result[1] = mac.1; result[2] = mac.2; result[3] = mac.3; result[4] = mac.4; result[5] = mac.5
        for (offset, value) in [(6, status), (8, maxQueuePairs), (10, mtu)] {
            result[offset] = UInt8(truncatingIfNeeded: value)
            result[offset + 1] = UInt8(truncatingIfNeeded: value >> 8)
        }
        return result
    }
}

/// MTU limits (VIRTIO 1.1 §5.1.4.1: the device's mtu is at least 68; vhost-user's
/// NET_SET_MTU accepts 68…65535, as DPDK checks).
@usableFromInline package enum VirtioNetMTU {
    @usableFromInline package static let minimum = 68
    @usableFromInline package static let maximum = 65535
    /// What a device without VIRTIO_NET_F_MTU is assumed to carry.
    @usableFromInline package static let ethernetDefault = 1500
}
