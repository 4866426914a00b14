import VirtioCore
import VirtioUser

/// The headers txonly writes into each frame: Ethernet + IPv4 + UDP, like testpmd's txonly
/// (198.18.0.1 → 198.18.0.2, UDP 9 → 9, benchmark addresses from RFC 2544). The payload is
/// whatever the buffer holds (unless `--verify` stamps it); only the 42 header bytes are
/// written per frame.
struct FrameTemplate {
    let bytes: [UInt8]
    let frameLength: Int
    /// Buffers each frame takes: more than one for frames longer than a buffer (jumbo frames),
    /// which go out as one chain.
    let buffersPerFrame: Int

    init(source: MACAddress, destination: MACAddress, frameLength: Int) {
        self.frameLength = frameLength
        buffersPerFrame = Self.buffers(forFrameLength: frameLength)
        var b = [UInt8](repeating: 0, count: 42)
        destination.write(to: &b, at: 0)
        source.write(to: &b, at: 6)
        b[12] = 0x08; b[13] = 0x00
        let ipLength = frameLength - 14
        b[14] = 0x45
        b[16] = UInt8(truncatingIfNeeded: ipLength >> 8); b[17] = UInt8(truncatingIfNeeded: ipLength)
        b[22] = 64          // TTL
        b[23] = 17          // UDP
        b[26...29] = [198, 18, 0, 1]
        b[30...33] = [198, 18, 0, 2]
        var sum: UInt32 = 0
        for i in stride(from: 14, to: 34, by: 2) { sum += UInt32(b[i]) << 8 | UInt32(b[i + 1]) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        let checksum = ~UInt16(sum)
        b[24] = UInt8(checksum >> 8); b[25] = UInt8(checksum & 0xFF)
        let udpLength = ipLength - 20
        b[34] = 0; b[35] = 9; b[36] = 0; b[37] = 9
        b[38] = UInt8(truncatingIfNeeded: udpLength >> 8); b[39] = UInt8(truncatingIfNeeded: udpLength)
        bytes = b
    }

    /// Buffers a frame of `length` bytes needs.
    static func buffers(forFrameLength length: Int) -> Int {
        (length + VirtioUserDevice.maximumFrameLength - 1) / VirtioUserDevice.maximumFrameLength
    }
}

extension MACAddress {
    func write(to array: inout [UInt8], at offset: Int) {
        array.withUnsafeMutableBytes { write(to: $0.baseAddress! + offset) }
    }
}
