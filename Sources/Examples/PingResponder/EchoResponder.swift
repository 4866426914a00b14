import VirtioUser

/// The whole "network stack" of the example: answers ARP requests for one IPv4 address and
/// ICMP echo requests sent to it, and ignores everything else. Works on raw frame bytes, with
/// every length and checksum checked before a byte is trusted.
struct EchoResponder {
    /// The address answered for, in network byte order as four bytes.
    let address: (UInt8, UInt8, UInt8, UInt8)
    let mac: MACAddress

    /// What a frame was.
    enum Outcome {
        case arpReply(length: Int)
        case echoReply(length: Int)
        case ignored
    }

    /// Writes the answer to `frame` at `reply` (room for `capacity` bytes); says what it was.
    func answer(_ frame: UnsafeRawBufferPointer, into reply: UnsafeMutableRawPointer, capacity: Int) -> Outcome {
        guard frame.count >= 14, frame.count <= capacity else { return .ignored }
        switch UInt16(frame[12]) << 8 | UInt16(frame[13]) {
        case 0x0806: return answerARP(frame, into: reply)
        case 0x0800: return answerEcho(frame, into: reply)
        default: return .ignored
        }
    }

    /// An ARP request (Ethernet, IPv4) for our address gets our MAC (RFC 826).
    private func answerARP(_ frame: UnsafeRawBufferPointer, into reply: UnsafeMutableRawPointer) -> Outcome {
        let arp = 14
        guard frame.count >= arp + 28,
              frame[arp] == 0, frame[arp + 1] == 1,           // hardware: Ethernet
              frame[arp + 2] == 0x08, frame[arp + 3] == 0x00,  // protocol: IPv4
              frame[arp + 4] == 6, frame[arp + 5] == 4,        // address lengths
              frame[arp + 6] == 0, frame[arp + 7] == 1,        // operation: request
              isOurAddress(frame, at: arp + 24) else { return .ignored }
        let length = 60  // the Ethernet minimum, zero padded
        reply.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        let out = UnsafeMutableRawBufferPointer(start: reply, count: length)
        copy(frame, from: arp + 8, count: 6, to: out, at: 0)  // to the requester's hardware address
        write(mac, to: out, at: 6)
        out[12] = 0x08; out[13] = 0x06
        copy(frame, from: arp, count: 6, to: out, at: arp)  // Ethernet, IPv4, 6, 4
        out[arp + 6] = 0; out[arp + 7] = 2                  // operation: reply
        write(mac, to: out, at: arp + 8)                    // sender: us
        copy(frame, from: arp + 24, count: 4, to: out, at: arp + 14)
        copy(frame, from: arp + 8, count: 10, to: out, at: arp + 18)  // target: the requester
        return .arpReply(length: length)
    }

    /// An ICMP echo request to our address (unfragmented, checksums right) gets the echo reply
    /// with the same identifier, sequence number and data (RFC 792).
    private func answerEcho(_ frame: UnsafeRawBufferPointer, into reply: UnsafeMutableRawPointer) -> Outcome {
        let ip = 14
        guard frame.count >= ip + 20, frame[ip] >> 4 == 4 else { return .ignored }
        let headerLength = Int(frame[ip] & 0x0F) * 4
        let totalLength = Int(frame[ip + 2]) << 8 | Int(frame[ip + 3])
        let icmp = ip + headerLength
        guard headerLength >= 20, totalLength >= headerLength + 8, ip + totalLength <= frame.count,
              frame[ip + 6] & 0x3F == 0, frame[ip + 7] == 0,  // not a fragment (MF clear, offset 0)
              frame[ip + 9] == 1,                           // ICMP
              isOurAddress(frame, at: ip + 16),
              frame[icmp] == 8, frame[icmp + 1] == 0,       // echo request
              internetChecksum(frame, from: ip, count: headerLength) == 0,
              internetChecksum(frame, from: icmp, count: totalLength - headerLength) == 0 else { return .ignored }
        // Same frame, trailing padding cut, with the addresses swapped and new checksums.
        let length = ip + totalLength
        reply.copyMemory(from: frame.baseAddress!, byteCount: length)
        let out = UnsafeMutableRawBufferPointer(start: reply, count: length)
        copy(frame, from: 6, count: 6, to: out, at: 0)
        write(mac, to: out, at: 6)
        copy(frame, from: ip + 16, count: 4, to: out, at: ip + 12)
        copy(frame, from: ip + 12, count: 4, to: out, at: ip + 16)
        out[ip + 8] = 64  // a fresh TTL
        out[ip + 10] = 0; out[ip + 11] = 0
        let ipSum = internetChecksum(UnsafeRawBufferPointer(out), from: ip, count: headerLength)
        out[ip + 10] = UInt8(ipSum >> 8); out[ip + 11] = UInt8(ipSum & 0xFF)
        out[icmp] = 0  // echo reply
        out[icmp + 2] = 0; out[icmp + 3] = 0
        let icmpSum = internetChecksum(UnsafeRawBufferPointer(out), from: icmp, count: totalLength - headerLength)
        out[icmp + 2] = UInt8(icmpSum >> 8); out[icmp + 3] = UInt8(icmpSum & 0xFF)
        return .echoReply(length: length)
    }

    private func isOurAddress(_ frame: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        frame[offset] == address.0 && frame[offset + 1] == address.1
            && frame[offset + 2] == address.2 && frame[offset + 3] == address.3
    }

    private func copy(_ from: UnsafeRawBufferPointer, from offset: Int, count: Int, to out: UnsafeMutableRawBufferPointer, at position: Int) {
        for i in 0..<count { out[position + i] = from[offset + i] }
    }

    private func write(_ mac: MACAddress, to out: UnsafeMutableRawBufferPointer, at position: Int) {
        withUnsafeBytes(of: mac.bytes) { for i in 0..<6 { out[position + i] = $0[i] } }
    }
}

/// The Internet checksum (RFC 1071) of `count` bytes from `offset`: 0 over a header whose
/// checksum field is right, the value to store when the field was zeroed.
func internetChecksum(_ bytes: UnsafeRawBufferPointer, from offset: Int, count: Int) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i + 1 < count {
        sum &+= UInt32(bytes[offset + i]) << 8 | UInt32(bytes[offset + i + 1])
        i += 2
    }
    if i < count { sum &+= UInt32(bytes[offset + i]) << 8 }
    while sum >> 16 != 0 { sum = (sum & 0xFFFF) &+ (sum >> 16) }
    return ~UInt16(sum)
}
