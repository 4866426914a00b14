/// Rewrites the checksums of an Ethernet frame's IPv4 or IPv6 packet (the IPv4 header's, and
/// TCP's, UDP's, ICMP's or ICMPv6's) so that a mutated frame gets past lwIP's checks and into
/// the code behind them. Frames too short or of other types are left as they are.
enum ChecksumRepair {
    static func repair(_ frame: inout [UInt8]) {
        guard frame.count >= 14 else { return }
        let type = Int(frame[12]) << 8 | Int(frame[13])
        if type == 0x0800 { repairIPv4(&frame) } else if type == 0x86DD { repairIPv6(&frame) }
    }

    private static func repairIPv4(_ frame: inout [UInt8]) {
        let ip = 14
        guard frame.count >= ip + 20 else { return }
        let headerLength = Int(frame[ip] & 0x0F) * 4
        let totalLength = min(Int(frame[ip + 2]) << 8 | Int(frame[ip + 3]), frame.count - ip)
        guard headerLength >= 20, totalLength >= headerLength else { return }
        store(0, at: ip + 10, in: &frame)
        store(finish(sum(frame, ip, headerLength)), at: ip + 10, in: &frame)
        // Only unfragmented packets carry a whole transport header to repair.
        let fragment = (Int(frame[ip + 6]) << 8 | Int(frame[ip + 7])) & 0x3FFF
        guard fragment == 0 else { return }
        let payload = ip + headerLength
        let length = totalLength - headerLength
        var pseudo = sum(frame, ip + 12, 8) + UInt32(frame[ip + 9]) + UInt32(length)
        if frame[ip + 9] == 1 { pseudo = 0 }  // ICMP has no pseudo-header
        repairTransport(&frame, protocol: frame[ip + 9], at: payload, length: length, pseudo: pseudo, icmp: 1)
    }

    private static func repairIPv6(_ frame: inout [UInt8]) {
        let ip = 14
        guard frame.count >= ip + 40 else { return }
        let length = min(Int(frame[ip + 4]) << 8 | Int(frame[ip + 5]), frame.count - ip - 40)
        let pseudo = sum(frame, ip + 8, 32) + UInt32(frame[ip + 6]) + UInt32(length)
        repairTransport(&frame, protocol: frame[ip + 6], at: ip + 40, length: length, pseudo: pseudo, icmp: 58)
    }

    /// TCP (6), UDP (17) or the family's ICMP: its checksum field zeroed, then the sum stored.
    private static func repairTransport(_ frame: inout [UInt8], protocol: UInt8, at start: Int, length: Int, pseudo: UInt32, icmp: UInt8) {
        let field: Int
        switch `protocol` {
        case 6: field = 16
        case 17: field = 6
        case icmp: field = 2
        default: return
        }
        guard length >= field + 2 else { return }
        store(0, at: start + field, in: &frame)
        var checksum = finish(pseudo &+ sum(frame, start, length))
        if `protocol` == 17 && checksum == 0 { checksum = 0xFFFF }
        store(checksum, at: start + field, in: &frame)
    }

    private static func sum(_ bytes: [UInt8], _ start: Int, _ count: Int) -> UInt32 {
        var total: UInt32 = 0
        var i = start
        while i + 1 < start + count {
            total &+= UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < start + count { total &+= UInt32(bytes[i]) << 8 }
        return total
    }

    private static func finish(_ sum: UInt32) -> UInt16 {
        var s = sum
        while s > 0xFFFF { s = (s & 0xFFFF) + (s >> 16) }
        return ~UInt16(s)
    }

    private static func store(_ value: UInt16, at offset: Int, in frame: inout [UInt8]) {
        frame[offset] = UInt8(value >> 8)
        frame[offset + 1] = UInt8(value & 0xFF)
    }
}
