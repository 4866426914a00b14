import VhostUserBackend

/// One input: a byte giving the number of fds "received" (0…9), then a header and payload as
/// they would arrive on the socket. Whatever decodes must encode back to a message that decodes
/// to the same value; anything else must be a typed error, never a crash.
func fuzzMessageDecoder(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let start, count >= 1 + VhostUserHeader.byteCount else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    let descriptorCount = Int(bytes[0] % 10)
    let header: VhostUserHeader
    do {
        header = try VhostUserHeader.decode(Array(bytes[1...VhostUserHeader.byteCount])[...])
    } catch {
        return 0
    }
    let payload = Array(bytes[(1 + VhostUserHeader.byteCount)...].prefix(Int(header.size)))
    guard let message = try? VhostUserMessage.decode(header: header, payload: payload, descriptorCount: descriptorCount) else {
        return 0
    }
    let encoded = message.encodePayload()
    let again = VhostUserHeader(request: message.request, flags: VhostUserHeader.version, size: UInt32(encoded.count))
    guard let decodedAgain = try? VhostUserMessage.decode(header: again, payload: encoded, descriptorCount: message.descriptorCount),
          decodedAgain == message else {
        fatalError("\(message) does not survive an encode/decode round trip")
    }
    return 0
}

