/// How the peer broke the vhost-user message protocol (QEMU's docs/interop/vhost-user.rst).
/// `request` fields name the message (`SET_MEM_TABLE`); `problem` says what was wrong with it.
public enum ProtocolViolation: Sendable, Equatable, CustomStringConvertible {
    /// A message's header or payload does not parse.
    case malformedMessage(request: String, problem: String)
    /// A reply does not answer `request` as it must.
    case badReply(to: String, problem: String)
    /// `request` carries the wrong file descriptors.
    case badFileDescriptors(request: String, problem: String)
    /// A request about ring `ring` is out of range or out of order.
    case badRingSetup(ring: Int, problem: String)
    /// `request` needs `feature`, which was not negotiated.
    case notNegotiated(request: String, feature: String)
    /// `request` (SET_FEATURES or SET_PROTOCOL_FEATURES) asks for feature bits `asked`, beyond
    /// the `offered` ones.
    case beyondOffer(request: String, asked: UInt64, offered: UInt64)
    /// The memory table does not describe usable memory.
    case badMemoryTable(problem: String)
    /// A frame's descriptors or virtio-net header break the rules.
    case badFrame(problem: String)
    /// `request` is not implemented by this side.
    case unsupportedRequest(String)

    public var description: String {
        let what: String
        switch self {
        case .malformedMessage(let request, let problem): what = "\(request): \(problem)"
        case .badReply(let request, let problem): what = "the reply to \(request): \(problem)"
        case .badFileDescriptors(let request, let problem): what = "\(request): \(problem)"
        case .badRingSetup(let ring, let problem): what = "ring \(ring): \(problem)"
        case .notNegotiated(let request, let feature): what = "\(request) without \(feature) negotiated"
        case .beyondOffer(let request, let asked, let offered):
            let extra = asked & ~offered
            let named = request == "SET_FEATURES" ? " (\(VirtioFeatures(rawValue: extra)))" : ""
            what = "\(request) asks for 0x\(String(extra, radix: 16))\(named), which was not offered"
        case .badMemoryTable(let problem): what = "the memory table: \(problem)"
        case .badFrame(let problem): what = "a frame: \(problem)"
        case .unsupportedRequest(let request): return "\(request) is not supported by this side; the peer may go on without it."
        }
        return "The vhost-user peer broke the protocol (\(what)); the session is closed. Fix or update the peer."
    }
}
