import VirtioCore

/// The 12-byte header of every vhost-user message: request, flags, payload size (all
/// little-endian u32).
@usableFromInline package struct VhostUserHeader: Equatable, Sendable {
    @usableFromInline package var request: VhostUserRequest
    @usableFromInline package var flags: UInt32
    @usableFromInline package var size: UInt32

    /// Header length on the wire.
    @usableFromInline package static let byteCount = 12
    /// Bits 0-1: protocol version, always 1.
    @usableFromInline package static let versionMask: UInt32 = 0x3
    @usableFromInline package static let version: UInt32 = 0x1
    /// Bit 2: this message is a reply.
    @usableFromInline package static let replyFlag: UInt32 = 0x4
    /// Bit 3: the sender wants a REPLY_ACK.
    @usableFromInline package static let needReplyFlag: UInt32 = 0x8
    /// The largest payload we accept. The biggest message we know (a full SET_MEM_TABLE, or a
    /// config space) is far smaller; anything past this is a broken or hostile peer.
    @usableFromInline package static let maximumPayload: UInt32 = 4096

    @usableFromInline package init(request: VhostUserRequest, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    /// True when the reply bit is set.
    @usableFromInline package var isReply: Bool { flags & Self.replyFlag != 0 }
    /// True when a REPLY_ACK is requested.
    @usableFromInline package var needsReply: Bool { flags & Self.needReplyFlag != 0 }

    /// Appends the wire form to `bytes`.
    @usableFromInline package func encode(into bytes: inout [UInt8]) {
        bytes.appendLittleEndian(request.rawValue)
        bytes.appendLittleEndian(flags)
        bytes.appendLittleEndian(size)
    }

    /// Reads a header from exactly 12 bytes and checks the version and the size bound.
    @usableFromInline package static func decode(_ bytes: ArraySlice<UInt8>) throws(VirtioError) -> VhostUserHeader {
        guard bytes.count == byteCount else {
            throw .peerProtocol(.malformedMessage(request: "a header", problem: "12 bytes are needed; \(bytes.count) came"))
        }
        var reader = WireReader(bytes)
        let header = VhostUserHeader(
            request: VhostUserRequest(rawValue: reader.u32()), flags: reader.u32(), size: reader.u32())
        guard header.flags & versionMask == version else {
            throw .peerProtocol(.malformedMessage(request: "\(header.request)", problem: "protocol version \(header.flags & versionMask); only version 1 exists"))
        }
        guard header.size <= maximumPayload else {
            throw .peerProtocol(.malformedMessage(request: "\(header.request)", problem: "a \(header.size)-byte payload announced; the limit is \(maximumPayload)"))
        }
        return header
    }
}
