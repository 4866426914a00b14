import VirtioCore

/// Checksum and segmentation offload between a front-end's transmit and receive queues in
/// loopback: a request is passed through when the receiving side negotiated the matching
/// GUEST_* feature, a checksum is filled in here when it did not, and a large TCP frame it
/// cannot take is dropped (this back-end does not segment).
extension BackendDataPath {
    /// What to do with one frame's offload request.
    enum OffloadAction {
        /// Nothing requested, or passed through: this goes into the receive header.
        case deliver(VirtioNetOffload)
        /// Fill in the checksum (start, offset within the frame), then deliver without flags.
        case computeChecksum(start: Int, offset: Int)
        /// The receiver cannot take it.
        case drop
    }

    /// Reads and checks the transmit header's offload fields (only when the front-end may send
    /// offloads: CSUM or HOST_TSO negotiated). A request it did not negotiate, or a checksum
    /// position outside the frame, breaks the protocol.
    func offloadAction(_ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int, frameLength: Int) throws(VirtioError) -> OffloadAction {
        let offload = try requestedOffload(segments, count, frameLength: frameLength)
        if offload.isEmpty { return .deliver(VirtioNetOffload()) }
        if features.isSuperset(of: offload.featuresNeededToReceive) { return .deliver(offload) }
        if offload.gsoType == VirtioNetOffload.gsoNone {
            return .computeChecksum(start: Int(offload.checksumStart), offset: Int(offload.checksumOffset))
        }
        return .drop
    }

    /// The offload request of a transmit chain's header, checked against what was negotiated
    /// and against the frame's length.
    func requestedOffload(_ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int, frameLength: Int) throws(VirtioError) -> VirtioNetOffload {
        let offload = try header(of: segments, count)
        if offload.isEmpty { return offload }
        guard let needed = offload.featuresNeededToSend, features.isSuperset(of: needed) else {
            throw VirtioError(.protocolViolation, "A transmit header asks for offload flags 0x\(String(offload.flags, radix: 16)), GSO type \(offload.gsoType) without the features for it (negotiated: \(features)).")
        }
        if offload.flags & VirtioNetOffload.needsChecksum != 0 {
            guard Int(offload.checksumStart) + Int(offload.checksumOffset) + 2 <= frameLength else {
                throw VirtioError(.protocolViolation, "A transmit header puts the checksum at \(offload.checksumStart) + \(offload.checksumOffset) in a frame of \(frameLength) bytes.")
            }
        }
        return offload
    }

    /// The offload fields of the virtio-net header at the start of a chain.
    func header(of segments: UnsafeMutablePointer<ChainSegment>, _ count: Int) throws(VirtioError) -> VirtioNetOffload {
        // Passed as pointers, not through closures: this runs per frame in tap mode.
        var header = (UInt64(0), UInt32(0))
        try gather(segments, count, into: &header, bytes: VirtioNetHeader.size)
        return VirtioNetOffload(header: &header)
    }

    /// Copies the first `bytes` bytes of a chain (all readable) to `destination`.
    private func gather(_ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int, into destination: UnsafeMutableRawPointer, bytes: Int) throws(VirtioError) {
        var copied = 0
        var i = 0
        while copied < bytes, i < count {
            let n = min(Int(segments[i].length), bytes - copied)
            if n > 0 { (destination + copied).copyMemory(from: try memory.translate(segments[i]), byteCount: n) }
            copied += n
            i += 1
        }
    }

    /// Fills in the Internet checksum of frame bytes `start…` at `start + offset`, in receive
    /// chain segments holding the 12-byte header and then the frame (VIRTIO 1.1 §5.1.6.2:
    /// the field holds the pseudo-header sum, which the sum includes).
    func fillChecksum(_ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int, start: Int, offset: Int, frameLength: Int) throws(VirtioError) {
        let from = VirtioNetHeader.size + start
        let to = VirtioNetHeader.size + frameLength
        var sum: UInt32 = 0
        var highByte = true
        var position = 0
        for i in 0..<count where position < to {
            let length = Int(segments[i].length)
            let lower = max(from, position)
            let upper = min(to, position + length)
            if lower < upper {
                let bytes = try memory.translate(segments[i])
                for b in lower..<upper {
                    let value = UInt32(bytes.load(fromByteOffset: b - position, as: UInt8.self))
                    sum &+= highByte ? value << 8 : value
                    highByte.toggle()
                }
            }
            position += length
        }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) &+ (sum >> 16) }
        var result = ~UInt16(truncatingIfNeeded: sum)
        // UDP reserves 0 for "no checksum" (RFC 768): a computed 0 is sent as all ones.
        if result == 0 && offset == 6 { result = 0xFFFF }
        try store(UInt8(result >> 8), at: from + offset, segments, count)
        try store(UInt8(result & 0xFF), at: from + offset + 1, segments, count)
    }

    func store(_ byte: UInt8, at position: Int, _ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int) throws(VirtioError) {
        var base = 0
        for i in 0..<count {
            let length = Int(segments[i].length)
            if position < base + length {
                try memory.translate(segments[i]).storeBytes(of: byte, toByteOffset: position - base, as: UInt8.self)
                return
            }
            base += length
        }
    }
}
