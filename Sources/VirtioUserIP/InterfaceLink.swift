import CLwIP
import Synchronization
import VirtioCore
import VirtioUser

/// The frames between one device queue pair and lwIP's netif for it: received bursts go into
/// the stack, the stack's output goes out in bursts. Guarded by lwIP's core lock, except
/// `stopping`.
///
/// Each frame is copied once each way at this boundary. lwIP keeps what it receives (TCP's
/// receive and out-of-order queues) as long as the app has not read it; lending it the device's
/// receive buffers instead would let slow readers empty the pool the receive ring refills from.
/// What lwIP sends lives in its own heap, which the back-end cannot address.
package final class InterfaceLink: @unchecked Sendable {
    /// Nil for a link whose output is discarded (the fuzz harness's, which only feeds input).
    let device: VirtioUserDevice?
    let queue: Int
    let macAddress: MACAddress
    package let netif: UnsafeMutablePointer<netif>
    let mtu: Int
    private let transmitBurst = PacketBurst(capacity: 32)
    private let receiveBurst = PacketBurst(capacity: 64)
    let stopping = Atomic<Bool>(false)
    /// Frames the device had no room for, or the stack no memory for.
    private(set) var transmitDrops = 0
    private(set) var receiveDrops = 0
    /// Ports bound on this interface: lwIP checks ports across all interfaces, so binds use
    /// SO_REUSEADDR and these keep them unique per interface.
    package var tcpPorts = Set<UInt16>()
    package var udpPorts = Set<UInt16>()
    /// What is open on this interface, to close with it (``detach()``). Each object keeps
    /// itself alive while open and leaves its list when it closes or fails, so the lists add
    /// no lifetime of their own.
    var connections: [ObjectIdentifier: TCPConnection] = [:]
    var listeners: [ObjectIdentifier: TCPListener] = [:]
    var sockets: [ObjectIdentifier: UDPSocket] = [:]
    /// In the stack: between `attach` and `detach`.
    package internal(set) var isAttached = false
    /// Frames a link without a device dropped instead of sending.
    package private(set) var discardedOutput = 0
    /// IP packets addressed to neither this interface nor a broadcast or multicast group.
    private(set) var notForUs = 0
    /// The device negotiated GUEST_CSUM: frames may arrive with their checksum left to us.
    private let completesChecksums: Bool
    /// Frames whose checksum the sender left to us, filled in before lwIP checked it.
    package private(set) var checksumsCompleted = 0

    convenience init(device: VirtioUserDevice, queue: Int) {
        self.init(device: device, queue: queue, macAddress: device.macAddress, mtu: device.mtu,
                  completingChecksums: device.negotiatedFeatures.contains(.netGuestCsum))
    }

    /// A link with no device: what the stack sends is dropped. With `completingChecksums`, it
    /// takes frames as a device that negotiated GUEST_CSUM delivers them.
    package convenience init(discardingOutputWith macAddress: MACAddress, mtu: Int, completingChecksums: Bool = false) {
        self.init(device: nil, queue: 0, macAddress: macAddress, mtu: mtu, completingChecksums: completingChecksums)
    }

    private init(device: VirtioUserDevice?, queue: Int, macAddress: MACAddress, mtu: Int, completingChecksums: Bool) {
        self.device = device
        self.queue = queue
        self.macAddress = macAddress
        self.mtu = min(mtu, VirtioUserDevice.maximumFrameLength - 14)
        completesChecksums = completingChecksums
        netif = .allocate(capacity: 1)
        netif.initialize(to: CLwIP.netif())
    }

    deinit {
        netif.deinitialize(count: 1)
        netif.deallocate()
    }

    /// Copies lwIP's frame into a device buffer; sends it now, or with the holder's burst.
    func output(_ frame: UnsafeMutablePointer<pbuf>) -> err_t {
        let length = Int(frame.pointee.tot_len)
        guard let device else {
            discardedOutput &+= 1
            return .ok
        }
        guard length <= VirtioUserDevice.maximumFrameLength else {
            transmitDrops &+= 1
            return .value
        }
        if transmitBurst.space == 0 { flush() }
        guard device.allocate(into: transmitBurst, count: 1, queue: queue) == 1 else {
            // No buffer: TCP keeps the segment and sends it again later.
            transmitDrops &+= 1
            return .memory
        }
        let last = transmitBurst.count - 1
        var buffer = transmitBurst[last]
        _ = pbuf_copy_partial(frame, buffer.data, UInt16(length), 0)
        buffer.length = length
        transmitBurst[last] = buffer
        if !LwIPCore.batching { flush() }
        return .ok
    }

    /// Sends the batched frames; what the ring has no room for is dropped (TCP resends).
    func flush() {
        guard let device, transmitBurst.count > 0 else { return }
        device.transmit(transmitBurst, queue: queue)
        if transmitBurst.count > 0 {
            transmitDrops &+= transmitBurst.count
            device.release(transmitBurst, queue: queue)
        }
    }

    /// The I/O thread's loop: receive bursts into the stack, and sleep on the back-end's
    /// notification while nothing comes.
    func run() {
        guard let device else { return }
        while !stopping.load(ordering: .relaxed) {
            let received = LwIPCore.withCore { receiveBurstIntoStack(from: device) }
            if received > 0 { continue }
            switch LwIPCore.withCore({ device.armReceive(queue: queue) }) {
            case .framesWaiting:
                continue
            case .notRunning:
                MonotonicClock.sleep(milliseconds: 10)
            case .armed(let descriptor):
                // At most 100 ms, so a stop is seen.
                _ = try? Poll.waitReadable(descriptor, milliseconds: 100)
                LwIPCore.withCore { device.disarmReceive(queue: queue) }
            }
        }
    }

    /// One received burst into lwIP's Ethernet input; returns the frames taken.
    private func receiveBurstIntoStack(from device: VirtioUserDevice) -> Int {
        let received = device.receive(into: receiveBurst, queue: queue)
        guard received > 0 else { return 0 }
        var i = 0
        while i < receiveBurst.count {
            let first = receiveBurst[i]
            // A frame of several buffers (mergeable receive buffers): its continuations follow.
            let count = Int(first.segments)
            guard count >= 1, i + count <= receiveBurst.count else {
                receiveDrops &+= 1
                i += 1
                continue
            }
            var total = 0
            for k in 0..<count { total += receiveBurst[i + k].length }
            let burst = receiveBurst
            input(length: total, offload: first.offload) { frame in
                var offset = 0
                for k in 0..<count {
                    let segment = burst[i + k]
                    _ = pbuf_take_at(frame, segment.data, UInt16(segment.length), UInt16(offset))
                    offset += segment.length
                }
            }
            i += count
        }
        device.release(receiveBurst, queue: queue)
        return received
    }

    /// One frame into lwIP's Ethernet input, with the offload fields of its virtio-net header
    /// (none by default), by the rules of a received one: the fuzz harness's way in. With the
    /// core lock held.
    package func input(_ frame: UnsafeRawBufferPointer, offload: VirtioNetOffload = VirtioNetOffload()) {
        input(length: frame.count, offload: offload) { _ = pbuf_take($0, frame.baseAddress, UInt16(frame.count)) }
    }

    /// A received frame's offload fields, applied: a segmented frame is dropped (never
    /// negotiated: IPInterface refuses GUEST_TSO), a checksum left open is completed when the
    /// link does that (GUEST_CSUM), and ignored otherwise (lwIP then checks what is there).
    private func input(length: Int, offload: VirtioNetOffload, fill: (UnsafeMutablePointer<pbuf>) -> Void) {
        guard offload.gsoType == VirtioNetOffload.gsoNone else {
            receiveDrops &+= 1
            return
        }
        let checksum = completesChecksums && offload.flags & VirtioNetOffload.needsChecksum != 0
            ? (start: Int(offload.checksumStart), offset: Int(offload.checksumOffset)) : nil
        input(length: length, completingChecksumAt: checksum, fill: fill)
    }

    /// Ethernet's shortest frame (without FCS). lwIP 2.1 reads a whole ARP header, and the
    /// IPv4 length field, before checking that the frame holds them: a peer's 23-byte ARP
    /// frame had it read past the buffer (FuzzIPInput, under ASan). So a shorter frame is
    /// padded with zeros, as a NIC receives one from the wire; IPv4 trims to its own length
    /// ("especially required for packets < 60 bytes", ip4_input says).
    static let minimumFrameLength = 60

    /// A pbuf of `length` bytes that `fill` writes (padded to ``minimumFrameLength``), into the
    /// stack; with `checksum`, the sender left the checksum from `start` on to us, to go at
    /// `start + offset`.
    private func input(
        length: Int, completingChecksumAt checksum: (start: Int, offset: Int)?,
        fill: (UnsafeMutablePointer<pbuf>) -> Void
    ) {
        let padded = max(length, Self.minimumFrameLength)
        guard length <= Int(UInt16.max), let frame = pbuf_alloc(PBUF_RAW, UInt16(padded), PBUF_RAM) else {
            receiveDrops &+= 1
            return
        }
        fill(frame)
        // A PBUF_RAM pbuf is one contiguous buffer.
        let bytes = frame.pointee.payload
        if padded > length, let bytes {
            (bytes + length).initializeMemory(as: UInt8.self, repeating: 0, count: padded - length)
        }
        if let checksum {
            // The position is the sender's: checked.
            guard checksum.start + checksum.offset + 2 <= length, let bytes else {
                receiveDrops &+= 1
                pbuf_free(frame)
                return
            }
            Self.completeChecksum(bytes, length: length, start: checksum.start, offset: checksum.offset)
            checksumsCompleted &+= 1
        }
        guard HostFilter.accepts(frame.pointee.payload, length: length, netif: netif) else {
            notForUs &+= 1
            pbuf_free(frame)
            return
        }
        if ethernet_input(frame, netif) != .ok { pbuf_free(frame) }
    }

    /// VIRTIO 1.1 §5.1.6.2.1: the field at `start + offset` holds the pseudo-header's sum; the
    /// Internet checksum of bytes `start..<length` (which include it) goes there. lwIP's
    /// `inet_chksum` returns it in network order, as it is stored.
    static func completeChecksum(_ bytes: UnsafeMutableRawPointer, length: Int, start: Int, offset: Int) {
        var sum = inet_chksum(bytes + start, UInt16(length - start))
        // UDP reserves 0 for "no checksum" (RFC 768): a computed 0 is sent as all ones.
        if sum == 0 && offset == 6 { sum = 0xFFFF }
        bytes.storeBytes(of: sum, toByteOffset: start + offset, as: UInt16.self)
    }
}
