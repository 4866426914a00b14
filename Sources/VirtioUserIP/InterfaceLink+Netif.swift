import CLwIP
import VirtioCore

extension InterfaceLink {
    /// Adds this link's netif to the stack with `configuration`'s addresses and brings it up.
    /// With the core lock held; false when lwIP refuses it.
    package func attach(_ configuration: IPInterface.Configuration) -> Bool {
        var address = ip4_addr_t(configuration.address)
        var netmask = ip4_addr_t(prefixLength: configuration.prefixLength)
        var gateway = configuration.gateway.map(ip4_addr_t.init) ?? ip4_addr_t(addr: 0)
        let state = Unmanaged.passUnretained(self).toOpaque()
        guard netif_add(netif, &address, &netmask, &gateway, state, initializeNetif, ethernet_input) != nil else {
            return false
        }
        // Static addresses only: no SLAAC from router advertisements.
        netif.pointee.ip6_autoconfig_enabled = 0
        if configuration.ipv6LinkLocal { netif_create_ip6_linklocal_address(netif, 1) }
        if configuration.gateway != nil || clwip_has_default_netif() == 0 { netif_set_default(netif) }
        netif_set_up(netif)
        netif_set_link_up(netif)
        LwIPCore.interfaces.append(self)
        isAttached = true
        return true
    }

    /// Closes what is open on the interface (listeners and sockets end, connections fail with
    /// ``IPError/interfaceClosed`` and their peers get a reset), then takes the netif out of the
    /// stack. With the core lock held.
    ///
    /// netif_remove would abort every TCP connection whose local address is this interface's,
    /// on any interface: a tenant with the same address would lose its own. So ours are closed
    /// here, and the addresses are cleared before netif_remove looks at them.
    package func detach() {
        guard isAttached else { return }
        for listener in Array(listeners.values) { listener.closeWithCore() }
        for socket in Array(sockets.values) { socket.closeWithCore() }
        for connection in Array(connections.values) { connection.interfaceClosedWithCore() }
        clwip_netif_clear_addresses_quietly(netif)
        netif_remove(netif)
        isAttached = false
        LwIPCore.interfaces.removeAll { $0 === self }
        flush()
    }
}

/// lwIP's netif init callback: an Ethernet interface with the link's MAC and MTU.
private func initializeNetif(_ netif: UnsafeMutablePointer<netif>?) -> err_t {
    guard let netif, let state = netif.pointee.state else { return .value }
    let link = Unmanaged<InterfaceLink>.fromOpaque(state).takeUnretainedValue()
    netif.pointee.name = (0x76, 0x75)  // "vu"
    netif.pointee.output = etharp_output
    netif.pointee.output_ip6 = ethip6_output
    netif.pointee.linkoutput = { netif, frame in
        guard let netif, let frame, let state = netif.pointee.state else { return .value }
        return Unmanaged<InterfaceLink>.fromOpaque(state).takeUnretainedValue().output(frame)
    }
    netif.pointee.mtu = UInt16(link.mtu)
    netif.pointee.mtu6 = UInt16(link.mtu)
    netif.pointee.flags = clwip_ethernet_netif_flags()
    netif.pointee.hwaddr_len = 6
    withUnsafeMutableBytes(of: &netif.pointee.hwaddr) { bytes in
        link.macAddress.write(to: bytes.baseAddress!)
    }
    return .ok
}
