import CLwIP
import VirtioCore
import VirtioUser

/// An IP host on a `VirtioUserDevice`: lwIP's TCP/IP stack on one queue pair, with a static
/// IPv4 address and an IPv6 link-local one. ARP, ICMP (ping) and neighbour discovery are
/// answered by the stack; apps use ``listen(port:backlog:)``, ``connect(to:)`` and
/// ``bindUDP(port:queueLimit:)``.
///
/// A dedicated thread moves frames between the device and the stack; timers run on lwIP's own
/// thread. Nothing polls on Swift's cooperative pool: tasks wait on continuations that the
/// stack resumes. Listeners and sockets receive only what arrives on their own interface.
///
/// ```swift
/// let device = try VirtioUserDevice(configuration: .init(socketPath: "/run/vhost.sock"))
/// try device.start()
/// let interface = try IPInterface(device: device, configuration: .init(address: IPAddress(192, 0, 2, 2), prefixLength: 24))
/// for try await connection in try interface.listen(port: 80) { ... }
/// ```
public final class IPInterface: Sendable {
    /// The addresses and queue pair of an interface.
    public struct Configuration: Sendable {
        /// The interface's IPv4 address.
        public var address: IPAddress
        /// The IPv4 prefix length (24 for a /24).
        public var prefixLength: Int
        /// The IPv4 router for destinations outside the prefix; none by default.
        public var gateway: IPAddress?
        /// The device's queue pair this interface owns; no other thread may use it.
        public var queue = 0
        /// Whether the interface takes an IPv6 link-local address (fe80::/64 from its MAC).
        public var ipv6LinkLocal = true

        public init(address: IPAddress, prefixLength: Int, gateway: IPAddress? = nil) {
            self.address = address
            self.prefixLength = prefixLength
            self.gateway = gateway
        }

        /// The address and prefix from CIDR text such as `192.0.2.2/24`; nil unless it is an
        /// IPv4 address, a slash and a prefix length of 0 to 32.
        public init?(cidr: String, gateway: IPAddress? = nil) {
            let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let address = IPAddress(String(parts[0])), address.isIPv4,
                  let prefix = Int(parts[1]), (0...32).contains(prefix) else { return nil }
            self.init(address: address, prefixLength: prefix, gateway: gateway)
        }
    }

    package let link: InterfaceLink
    private let thread: DedicatedThread
    public let configuration: Configuration
    /// The device under the interface (for its statistics and link state).
    public let device: VirtioUserDevice
    /// Whether ``close()`` stops the device too (the interface made it).
    private let ownsDevice: Bool

    /// An interface on a device of its own: connects to the vhost-user back-end at
    /// `socketPath` with the device's default configuration, takes the address and prefix of
    /// `cidr` (such as `192.0.2.2/24`), and stops the device on ``close()``.
    public convenience init(socketPath: String, cidr: String, gateway: IPAddress? = nil) throws(IPError) {
        guard let configuration = Configuration(cidr: cidr, gateway: gateway) else {
            throw .invalidArgument("'\(cidr)' is not an IPv4 address and prefix length such as 192.0.2.2/24")
        }
        let device: VirtioUserDevice
        do throws(VirtioError) {
            device = try VirtioUserDevice(configuration: .init(socketPath: socketPath))
            try device.start()
        } catch {
            throw .device(error)
        }
        do {
            try self.init(device: device, configuration: configuration, ownsDevice: true)
        } catch {
            device.stop()
            throw error
        }
    }

    /// Brings the interface up on `device` (started already) and starts its I/O thread.
    ///
    /// Of the device's offloads, receive checksum (`.receiveChecksum`, GUEST_CSUM) is honoured:
    /// a frame whose checksum the back-end left open is completed before lwIP checks it.
    /// Receive segmentation is refused (``IPError/invalidArgument(_:)``); transmit offloads go
    /// unused, since lwIP computes every checksum itself.
    public convenience init(device: VirtioUserDevice, configuration: Configuration) throws(IPError) {
        try self.init(device: device, configuration: configuration, ownsDevice: false)
    }

    private init(device: VirtioUserDevice, configuration: Configuration, ownsDevice: Bool) throws(IPError) {
        guard configuration.address.isIPv4 else {
            throw .invalidArgument("the interface address \(configuration.address) must be IPv4 (IPv6 is link-local only)")
        }
        guard (0...32).contains(configuration.prefixLength) else {
            throw .invalidArgument("prefix length \(configuration.prefixLength) is not in 0...32")
        }
        if let gateway = configuration.gateway, !gateway.isIPv4 {
            throw .invalidArgument("the gateway \(gateway) must be IPv4")
        }
        guard configuration.queue >= 0 && configuration.queue < device.queuePairCount else {
            throw .invalidArgument("queue \(configuration.queue) does not exist: the device has \(device.queuePairCount) queue pair(s)")
        }
        let segmenting = device.negotiatedFeatures.intersection([.netGuestTSO4, .netGuestTSO6])
        guard segmenting.isEmpty else {
            throw .invalidArgument("the device negotiated receive segmentation offload (\(segmenting)), and lwIP takes frames no longer than the MTU: create the device without .receiveSegmentation4 and .receiveSegmentation6")
        }
        self.configuration = configuration
        self.device = device
        self.ownsDevice = ownsDevice
        let link = InterfaceLink(device: device, queue: configuration.queue)
        self.link = link
        let added = LwIPCore.withCore { link.attach(configuration) }
        guard added else { throw .interfaceFailure("lwIP refused the interface (netif_add failed)") }
        do {
            thread = try DedicatedThread(name: "virtio-ip-io") { link.run() }
        } catch {
            Self.remove(link)
            throw .interfaceFailure("could not start the I/O thread: \(error)")
        }
    }

    deinit { close() }

    /// Stops the I/O thread and takes the interface out of the stack (and stops the device, if
    /// the interface made it). Connections and sockets on it stop hearing from the network.
    /// Idempotent.
    public func close() {
        guard !link.stopping.exchange(true, ordering: .relaxed) else { return }
        if !thread.isCurrent { thread.join() }
        Self.remove(link)
        if ownsDevice { device.stop() }
    }

    private static func remove(_ link: InterfaceLink) {
        LwIPCore.withCore { link.detach() }
    }

    /// The IPv6 link-local address, once the stack has made one (nil with
    /// ``Configuration/ipv6LinkLocal`` off). It is usable after duplicate address detection,
    /// about a second after start.
    public var ipv6LinkLocalAddress: IPAddress? {
        LwIPCore.withCore { () -> IPAddress? in
            guard configuration.ipv6LinkLocal, clwip_ip6_address_state(link.netif, 0) != 0,
                  let address = clwip_ip6_address(link.netif, 0) else { return nil }
            return IPAddress(lwip: address)
        }
    }

    /// Frames this interface dropped: `transmit`, the device had no transmit room or buffer;
    /// `receive`, a received frame was malformed or found the stack out of memory; `notForUs`,
    /// an IP packet addressed to neither this interface nor a broadcast or multicast group
    /// (an interface is a host, not a router).
    public var drops: (transmit: Int, receive: Int, notForUs: Int) {
        LwIPCore.withCore { (link.transmitDrops, link.receiveDrops, link.notForUs) }
    }
}

extension ip4_addr_t {
    /// `address` (IPv4) as lwIP stores it: network order in memory.
    init(_ address: IPAddress) {
        let b = address.bytes
        self.init(addr: UInt32(b[0]) | UInt32(b[1]) << 8 | UInt32(b[2]) << 16 | UInt32(b[3]) << 24)
    }

    /// The netmask of a prefix of `prefixLength` bits.
    init(prefixLength: Int) {
        let mask: UInt32 = prefixLength == 0 ? 0 : ~UInt32(0) << (32 - prefixLength)
        self.init(addr: mask.bigEndian)
    }
}

extension IPAddress {
    init(lwip address: UnsafePointer<ip_addr_t>) {
        if clwip_ip_is_v4(address) != 0 {
            let raw = clwip_ip4_raw(address)
            self.init(ipv4Bytes: [0, 8, 16, 24].map { UInt8(truncatingIfNeeded: raw >> $0) })
        } else {
            let words = (0..<4).map { UInt32(bigEndian: clwip_ip6_word(address, Int32($0))) }
            self.init(ipv6Bytes: words.flatMap { w in [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: w >> $0) } })
        }
    }

    /// The address as lwIP's dual-stack type; a link-local IPv6 one scoped to `netif`.
    func lwip(on netif: UnsafeMutablePointer<netif>) -> ip_addr_t {
        let b = bytes
        if isIPv4 { return clwip_ip4(b[0], b[1], b[2], b[3]) }
        return b.withUnsafeBufferPointer { clwip_ip6($0.baseAddress, clwip_netif_index(netif)) }
    }
}
