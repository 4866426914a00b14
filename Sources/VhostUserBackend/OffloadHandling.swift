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
    func offloadAction(_ chain: HostChain, frameLength: Int) throws(VirtioError) -> OffloadAction {
        let offload = try requestedOffload(chain, frameLength: frameLength)
        if offload.isEmpty { return .deliver(VirtioNetOffload()) }
        if features.isSuperset(of: offload.featuresNeededToReceive) { return .deliver(offload) }
        if offload.gsoType == VirtioNetOffload.gsoNone {
            return .computeChecksum(start: Int(offload.checksumStart), offset: Int(offload.checksumOffset))
        }
        return .drop
    }

    /// The offload request of a transmit chain's header, checked against what was negotiated
    /// and against the frame's length.
    func requestedOffload(_ chain: HostChain, frameLength: Int) throws(VirtioError) -> VirtioNetOffload {
        let offload = Self.header(of: chain)
        if offload.isEmpty { return offload }
        guard let needed = offload.featuresNeededToSend, features.isSuperset(of: needed) else {
            throw .peerProtocol(.badFrame(problem: "a transmit header asks for offload flags 0x\(String(offload.flags, radix: 16)), GSO type \(offload.gsoType) without the features for it (negotiated: \(features))"))
        }
        if offload.flags & VirtioNetOffload.needsChecksum != 0 {
            guard Int(offload.checksumStart) + Int(offload.checksumOffset) + 2 <= frameLength else {
                throw .peerProtocol(.badFrame(problem: "a transmit header puts the checksum at \(offload.checksumStart) + \(offload.checksumOffset) in a frame of \(frameLength) bytes"))
            }
        }
        return offload
    }

    /// The offload fields of the virtio-net header at the start of a chain (zeros for bytes the
    /// chain lacks).
    static func header(of chain: HostChain) -> VirtioNetOffload {
        // Passed as pointers, not through closures: this runs per frame in tap mode.
        var header = (UInt64(0), UInt32(0))
        var reader = ChainReader(chain, from: 0)
        _ = withUnsafeMutableBytes(of: &header) { reader.read(into: $0.baseAddress!, count: VirtioNetHeader.size) }
        return VirtioNetOffload(header: &header)
    }

    /// Fills in the Internet checksum of frame bytes `start…` at `start + offset`, in a receive
    /// chain holding the 12-byte header and then the frame (VIRTIO 1.1 §5.1.6.2: the field
    /// holds the pseudo-header sum, which the sum includes).
    static func fillChecksum(_ chain: HostChain, start: Int, offset: Int, frameLength: Int) {
        let from = VirtioNetHeader.size + start
        var sum: UInt32 = 0
        var highByte = true
        var reader = ChainReader(chain, from: from)
        var remaining = frameLength &- start
        while remaining > 0, let (pointer, count) = reader.next(limit: remaining) {
            for b in 0..<count {
                let value = UInt32(pointer.load(fromByteOffset: b, as: UInt8.self))
                sum &+= highByte ? value << 8 : value
                highByte.toggle()
            }
            remaining &-= count
        }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) &+ (sum >> 16) }
        var result = ~UInt16(truncatingIfNeeded: sum)
        // UDP reserves 0 for "no checksum" (RFC 768): a computed 0 is sent as all ones.
        if result == 0 && offset == 6 { result = 0xFFFF }
        var bytes = result.bigEndian
        var writer = ChainWriter(chain, from: from + offset)
        withUnsafeBytes(of: &bytes) { writer.write($0.baseAddress!, 2) }
    }
}
