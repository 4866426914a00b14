import VhostUser

/// The vhost-user message decoder under a fuzzer. One input: a byte giving the number of fds
/// "received" (0…9), then a header and payload as they would arrive on the socket. Whatever
/// decodes must encode back to a message that decodes to the same value; anything else must be
/// a typed error, never a crash. (The wire types are the package's own, so the harness lives
/// here, beside the forwarding one.)
public enum MessageDecoderFuzzHarness {
    /// Runs one input; traps only when a decoded message does not survive the round trip.
    public static func run(_ input: UnsafeRawBufferPointer) {
        guard input.count >= 1 + VhostUserHeader.byteCount else { return }
        let bytes = Array(input)
        let descriptorCount = Int(bytes[0] % 10)
        let header: VhostUserHeader
        do {
            header = try VhostUserHeader.decode(Array(bytes[1...VhostUserHeader.byteCount])[...])
        } catch {
            return
        }
        let payload = Array(bytes[(1 + VhostUserHeader.byteCount)...].prefix(Int(header.size)))
        guard let message = try? VhostUserMessage.decode(header: header, payload: payload, descriptorCount: descriptorCount) else {
            return
        }
        let encoded = message.encodePayload()
        let again = VhostUserHeader(request: message.request, flags: VhostUserHeader.version, size: UInt32(encoded.count))
        guard let decodedAgain = try? VhostUserMessage.decode(header: again, payload: encoded, descriptorCount: message.descriptorCount),
              decodedAgain == message else {
            fatalError("\(message) does not survive an encode/decode round trip")
        }
    }
}
