/// Why the two sides of a vhost-user session could not agree.
public enum NegotiationFailure: Sendable, Equatable, CustomStringConvertible {
    /// The back-end does not offer a feature this configuration needs (`feature` names it;
    /// `offered` is what it offered).
    case missingFeature(feature: String, offered: VirtioFeatures)
    /// The back-end serves `offered` queue pairs; `wanted` were configured.
    case queuePairs(offered: Int, wanted: Int)
    /// The back-end cleared FEATURES_OK: it did not accept `features`.
    case featuresRejected(VirtioFeatures)
    /// The back-end refused `request` (a REPLY_ACK with a nonzero `status`).
    case requestRejected(request: String, status: UInt64)
    /// The back-end's config space holds a MAC address that is not unicast.
    case invalidMACAddress(MACAddress)
    /// The back-end's config space holds an MTU below the minimum.
    case invalidMTU(Int)
    /// GET_CONFIG returned `bytes` bytes, fewer than the net config needs.
    case shortConfigSpace(bytes: Int)

    public var description: String {
        switch self {
        case .missingFeature(let feature, let offered):
            return "The back-end does not offer \(feature) (it offered \(offered)); update or reconfigure the back-end."
        case .queuePairs(let offered, let wanted) where offered < 1:
            return "The back-end reports \(offered) queue pairs (\(wanted) configured); at least 1 is needed."
        case .queuePairs(let offered, let wanted):
            return "The back-end serves \(offered) queue pair(s); \(wanted) are configured. Configure fewer, or give the back-end more (DPDK: net_vhost0,…,queues=\(wanted))."
        case .featuresRejected(let features):
            return "The back-end did not accept features \(features) (FEATURES_OK cleared); configure fewer offloads or check the back-end's log."
        case .requestRejected(let request, let status):
            return "The back-end rejected \(request) (REPLY_ACK status \(status)); its log says why."
        case .invalidMACAddress(let mac):
            return "The back-end's config space holds MAC \(mac), which is not a unicast address; configure a MAC address for the device instead."
        case .invalidMTU(let mtu):
            return "The back-end's config space holds MTU \(mtu); at least \(VirtioNetMTU.minimum) is required. Fix the back-end's MTU."
        case .shortConfigSpace(let bytes):
            return "GET_CONFIG returned \(bytes) bytes, fewer than the \(VirtioNetConfig.byteCount) of a virtio-net config space; the back-end is broken."
        }
    }
}
