import CVirtioShim
import VirtioCore

/// The data path of one session: moves frames between a front-end's rings (loopback, sink,
/// TAP, a switch port), over the memory map and rings the protocol handler
/// (``BackendConnection``) set up. It holds no socket and speaks no protocol, so the fuzz
/// harness drives it over a memory map alone. Driven by one thread; allocates nothing per frame.
package final class BackendDataPath {
    let memory: GuestMemoryMap
    /// Two rings per queue pair: receive `2n`, transmit `2n + 1`.
    let vrings: [BackendVring]
    /// What SET_FEATURES agreed (offload decisions read it).
    private(set) var features: VirtioFeatures = []
    /// VIRTIO_F_RING_PACKED negotiated: the session's rings are packed (split otherwise). Every
    /// data path reads it once per call, in ``withPair(_:_:)``.
    private(set) var packedRings = false
    /// VIRTIO_NET_F_MRG_RXBUF negotiated: a frame may fill several receive chains.
    private(set) var mergeable = false
    /// VIRTIO_RING_F_INDIRECT_DESC negotiated: a chain may be an indirect table.
    private(set) var acceptsIndirect = false
    /// CSUM or HOST_TSO negotiated: transmit headers may carry offload requests.
    private(set) var sendsOffloads = false
    /// The MTU in force (the config space's, or what NET_SET_MTU announced): frames from a TAP
    /// are gathered for it.
    var mtu: Int
    /// Indirect tables read in the current burst (added to the counters once per burst, see
    /// ``countIndirectTables(into:)``).
    var indirectTablesRead = 0
    /// The process-wide truncation-fault count last checked (see ``GuestMemoryMap/checkTruncation()``).
    var guardFaultsSeen: UInt64 = cvs_guard_total_faults()
    /// Scatter lists for ``TapBridge``, allocated on first use.
    lazy var tapScratch = TapScratch()
    /// See ``VhostUserBackend/Configuration/frameObserver``.
    var frameObserver: (@Sendable (UInt64, Int) -> Void)?

    package init(memory: GuestMemoryMap, vrings: [BackendVring], mtu: Int = VirtioNetMTU.ethernetDefault) {
        self.memory = memory
        self.vrings = vrings
        self.mtu = mtu
    }

    /// Puts agreed features into force: the modes above and the rings' notifications and format.
    package func apply(_ requested: VirtioFeatures) {
        features = requested
        mergeable = requested.contains(.netMergeableRxBuffers)
        acceptsIndirect = requested.contains(.ringIndirectDescriptors)
        sendsOffloads = !requested.isDisjoint(with: [.netCsum, .netHostTSO4, .netHostTSO6])
        packedRings = requested.contains(.ringPacked)
        for vring in vrings {
            vring.usesEventIndex = requested.contains(.ringEventIndex)
            vring.packedFormat = requested.contains(.ringPacked)
        }
    }
}
