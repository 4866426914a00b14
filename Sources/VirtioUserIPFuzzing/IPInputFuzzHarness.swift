import CLwIP
import VirtioCore
import VirtioUserIP

/// Feeds arbitrary Ethernet frames into lwIP's input path exactly as VirtioUserIP's I/O thread
/// does (the same pbuf construction and `ethernet_input` under the core lock), for the
/// libFuzzer target in Fuzz/ (`Scripts/fuzz.sh`) and tests: a product of its own, so
/// VirtioUserIP's API has no fuzzing hooks. No device: what the stack answers is dropped.
///
/// The interface is 192.0.2.2/24 (and an IPv6 link-local address) with MAC 02:00:00:00:00:02
/// (beside a second one, 198.51.100.2/24, that must never send what the first received),
/// a TCP listener on port 80 and a UDP socket on port 7, so frames reach ARP, ICMP, IPv4 and
/// IPv6 reassembly, the TCP state machine with our accept and receive callbacks, and UDP
/// delivery. Input: byte 0 holds flags (bit 0: fix the IPv4/IPv6 header and TCP/UDP/ICMP
/// checksums of each frame first, so mutations get past lwIP's checks; bit 1: each frame
/// comes with a received virtio-net header's offload fields, for the link, which completes
/// checksums left open as it does when GUEST_CSUM was negotiated); then frames, each a 2-byte
/// big-endian length and that many bytes (the last one cut to what is left). With bit 1, a
/// frame's first 6 bytes are those fields: flags, GSO type, then checksum start and offset
/// (each 2 bytes, big-endian); a shorter one is skipped.
public final class IPInputFuzzHarness {
    private let link: InterfaceLink
    /// A second interface, 198.51.100.2/24, as another tenant's port in the same process:
    /// nothing that arrives on the first may leave through it.
    private let neighbour: InterfaceLink
    private let listener: TCPListener
    private let socket: UDPSocket

    public init() throws(IPError) {
        let link = InterfaceLink(discardingOutputWith: MACAddress(0x02, 0, 0, 0, 0, 0x02), mtu: 1500, completingChecksums: true)
        self.link = link
        let configuration = IPInterface.Configuration(address: IPAddress(192, 0, 2, 2), prefixLength: 24)
        let neighbour = InterfaceLink(discardingOutputWith: MACAddress(0x02, 0, 0, 0, 0, 0x03), mtu: 1500)
        self.neighbour = neighbour
        let other = IPInterface.Configuration(address: IPAddress(198, 51, 100, 2), prefixLength: 24)
        guard LwIPCore.withCore({ link.attach(configuration) && neighbour.attach(other) }) else {
            throw .interfaceFailure("netif_add failed")
        }
        listener = try LwIPCore.withCore { () throws(IPError) in try TCPListener(port: 80, backlog: 8, link: link) }
        socket = try LwIPCore.withCore { () throws(IPError) in try UDPSocket(port: 7, queueLimit: 64, link: link) }
    }

    deinit {
        listener.close()
        socket.close()
        LwIPCore.withCore {
            link.detach()
            neighbour.detach()
        }
    }

    /// Delivers the frames of `input`; what they left in our objects (connections to accept,
    /// datagrams to read) is cleared, as an app would take it. Returns the datagrams that
    /// reached port 7, the connections that reached the accept queue, the frames the second
    /// interface sent meanwhile (forwarded ones, or its ARP for them), and the frames the first
    /// one sent (its answers: ARP replies, ICMP echo replies, TCP segments).
    @discardableResult
    public func run(_ input: UnsafeRawBufferPointer) -> (datagrams: Int, connections: Int, leaked: Int, answered: Int) {
        guard let flags = input.first else { return (0, 0, 0, 0) }
        var offset = 1
        var frame = [UInt8]()
        return LwIPCore.withCore {
            let neighbourBefore = neighbour.discardedOutput
            let answeredBefore = link.discardedOutput
            while offset + 2 <= input.count {
                let length = Int(input[offset]) << 8 | Int(input[offset + 1])
                offset += 2
                let end = min(input.count, offset + length)
                var start = offset
                offset = end
                var offload = VirtioNetOffload()
                if flags & 2 != 0 {
                    guard end - start >= 6 else { continue }
                    offload = VirtioNetOffload(
                        flags: input[start], gsoType: input[start + 1],
                        checksumStart: UInt16(input[start + 2]) << 8 | UInt16(input[start + 3]),
                        checksumOffset: UInt16(input[start + 4]) << 8 | UInt16(input[start + 5]))
                    start += 6
                }
                frame.removeAll(keepingCapacity: true)
                frame.append(contentsOf: input[start..<end])
                if flags & 1 != 0 { ChecksumRepair.repair(&frame) }
                frame.withUnsafeBytes { link.input($0, offload: offload) }
            }
            let connections = listener.resetPendingWithCore()
            return (socket.discardQueuedWithCore(), connections, neighbour.discardedOutput - neighbourBefore, link.discardedOutput - answeredBefore)
        }
    }
}
