import VirtioUser

/// `--verify`: txonly stamps every frame's UDP payload with a sequence number and a byte pattern
/// derived from it, and every frame received is checked against its headers and that pattern,
/// so a peer in between (OVS, a switch, a guest) is shown to deliver frames intact, not only to
/// deliver the right number of them. Off the hot path unless asked for.
enum FrameCheck {
    /// The sequence number's place: right after the Ethernet, IPv4 and UDP headers.
    static let sequenceOffset = 42
    /// The pattern runs from here to the end of the frame.
    static let patternOffset = sequenceOffset + 8

    /// What the receive side found.
    struct Verdicts {
        var intact: UInt64 = 0
        var corrupt: UInt64 = 0
    }

    /// The pattern byte at `offset` of the frame stamped `sequence`.
    @inline(__always)
    static func patternByte(_ sequence: UInt64, _ offset: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: sequence &+ UInt64(truncatingIfNeeded: offset) &* 7)
    }

    /// Stamps the frame that starts at `burst[index]` (its `segments` entries, lengths set).
    static func stamp(_ sequence: UInt64, burst: PacketBurst, frameAt index: Int) {
        let first = burst[index]
        first.data.storeBytes(of: sequence.littleEndian, toByteOffset: sequenceOffset, as: UInt64.self)
        var frameOffset = 0
        for segment in index..<(index + Int(max(first.segments, 1))) {
            let buffer = burst[segment]
            let bytes = buffer.data.assumingMemoryBound(to: UInt8.self)
            var i = frameOffset < patternOffset ? patternOffset - frameOffset : 0
            while i < buffer.length {
                bytes[i] = patternByte(sequence, frameOffset + i)
                i += 1
            }
            frameOffset += buffer.length
        }
    }

    /// Checks every frame in `burst` (whole frames: a first segment and its continuations).
    static func check(_ burst: PacketBurst, into verdicts: inout Verdicts) {
        var index = 0
        while index < burst.count {
            let segments = max(Int(burst[index].segments), 1)
            if index + segments <= burst.count && isIntact(burst, frameAt: index, segments: segments) {
                verdicts.intact &+= 1
            } else {
                verdicts.corrupt &+= 1
            }
            index += segments
        }
    }

    /// The headers txonly writes (IPv4, UDP 9 → 9, lengths that match the frame), and the
    /// pattern of the sequence number it carries. MAC addresses are not checked: macswap and
    /// switches may change them.
    private static func isIntact(_ burst: PacketBurst, frameAt index: Int, segments: Int) -> Bool {
        var total = 0
        for segment in index..<(index + segments) { total += burst[segment].length }
        let first = burst[index]
        guard first.length >= patternOffset, total <= 65_535 else { return false }
        let header = UnsafeRawBufferPointer(start: first.data, count: sequenceOffset)
        let ipLength = Int(header[16]) << 8 | Int(header[17])
        let udpLength = Int(header[38]) << 8 | Int(header[39])
        guard header[12] == 0x08, header[13] == 0x00, header[14] == 0x45, header[23] == 17,
              header[34] == 0, header[35] == 9, header[36] == 0, header[37] == 9,
              ipLength == total - 14, udpLength == total - 34 else { return false }
        let sequence = UInt64(littleEndian: first.data.loadUnaligned(fromByteOffset: sequenceOffset, as: UInt64.self))
        var frameOffset = 0
        for segment in index..<(index + segments) {
            let buffer = burst[segment]
            let bytes = buffer.data.assumingMemoryBound(to: UInt8.self)
            var i = frameOffset < patternOffset ? patternOffset - frameOffset : 0
            while i < buffer.length {
                if bytes[i] != patternByte(sequence, frameOffset + i) { return false }
                i += 1
            }
            frameOffset += buffer.length
        }
        return true
    }
}
