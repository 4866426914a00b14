import CLwIP

/// Debian's lwIP is built with IP_FORWARD and LWIP_IPV6_FORWARD: given a packet for an address
/// that is not its own, it routes it out of another interface. With two interfaces in one
/// process (two tenants' ports) that would carry one tenant's packets onto the other's
/// network, so each interface acts as a host: before the stack sees an IP packet, it must be
/// addressed to this interface, to a broadcast or to a multicast group.
enum HostFilter {
    /// Whether `frame` (an Ethernet frame, contiguous) is for `netif` as a host. Frames too
    /// short to tell pass: lwIP drops those itself.
    static func accepts(_ frame: UnsafeRawPointer, length: Int, netif: UnsafeMutablePointer<netif>) -> Bool {
        guard length >= 14 else { return true }
        let type = UInt16(frame.load(fromByteOffset: 12, as: UInt8.self)) << 8 | UInt16(frame.load(fromByteOffset: 13, as: UInt8.self))
        switch type {
        case 0x0800:
            guard length >= 34 else { return true }
            return acceptsIPv4(destination: frame.loadUnaligned(fromByteOffset: 30, as: UInt32.self), netif: netif)
        case 0x86DD:
            guard length >= 54 else { return true }
            return acceptsIPv6(destination: frame + 38, netif: netif)
        default:
            return true
        }
    }

    /// `destination` as stored (network order in memory, like lwIP's `addr`).
    private static func acceptsIPv4(destination: UInt32, netif: UnsafeMutablePointer<netif>) -> Bool {
        let first = UInt8(truncatingIfNeeded: destination)
        if first >= 224 && first <= 239 { return true }  // multicast
        if destination == 0xFFFF_FFFF { return true }
        let own = netif.pointee.ip_addr.u_addr.ip4.addr
        let mask = netif.pointee.netmask.u_addr.ip4.addr
        return destination == own || destination == own | ~mask
    }

    private static func acceptsIPv6(destination: UnsafeRawPointer, netif: UnsafeMutablePointer<netif>) -> Bool {
        if destination.load(as: UInt8.self) == 0xFF { return true }  // multicast
        for i in 0..<Int32(LWIP_IPV6_NUM_ADDRESSES) where clwip_ip6_address_state(netif, i) != 0 {
            guard let own = clwip_ip6_address(netif, i) else { continue }
            var same = true
            for w in 0..<Int32(4) where clwip_ip6_word(own, w) != destination.loadUnaligned(fromByteOffset: Int(w) * 4, as: UInt32.self) {
                same = false
            }
            if same { return true }
        }
        return false
    }
}
