import VirtioCore

/// A device-side ring format the back-end serves: how a vring's running ring of this format
/// is found. The session's format is chosen once, in ``BackendDataPath/withPair(_:_:)``;
/// everything after it is generic over the format, with no further dispatch.
protocol BackendRing: DeviceRing {
    /// `vring`'s running ring, when it runs in this format.
    static func running(in vring: BackendVring) -> Self?
}

extension SplitRingDevice: BackendRing {
    @inline(__always)
    static func running(in vring: BackendVring) -> SplitRingDevice? { vring.split }
}

extension PackedRingDevice: BackendRing {
    @inline(__always)
    static func running(in vring: BackendVring) -> PackedRingDevice? { vring.packed }
}

/// One queue pair in the session's ring format: what every data path works on. Each side is
/// nil until its ring runs and is enabled.
struct PairRings<Ring: BackendRing> {
    /// The pair's number: its rings are `2 * index` (receive) and `2 * index + 1` (transmit).
    let index: Int
    let rxVring: BackendVring
    let txVring: BackendVring
    /// VIRTIO_NET_F_MRG_RXBUF negotiated.
    let mergeable: Bool

    /// The transmit ring (the front-end's frames to us), with its scratch space.
    @inline(__always)
    var tx: TransmitSource<Ring>? {
        guard txVring.enabled, let ring = Ring.running(in: txVring), let segments = txVring.segments,
              let hosts = txVring.hosts else { return nil }
        return TransmitSource(ring: ring, vring: txVring, segments: segments, hosts: hosts)
    }

    /// The receive ring (our frames to the front-end), with its scratch space.
    @inline(__always)
    var rx: ReceiveTarget<Ring>? {
        guard rxVring.enabled, let ring = Ring.running(in: rxVring), let segments = rxVring.segments,
              let hosts = rxVring.hosts, let heads = rxVring.mergeHeads, let capacities = rxVring.mergeCapacities
        else { return nil }
        return ReceiveTarget(
            ring: ring, vring: rxVring, segments: segments, hosts: hosts, heads: heads, capacities: capacities,
            mergeable: mergeable)
    }
}

/// A transmit ring and the scratch space one chain of it is read and translated into.
struct TransmitSource<Ring: BackendRing> {
    let ring: Ring
    let vring: BackendVring
    let segments: UnsafeMutablePointer<ChainSegment>
    /// Our addresses of the segments, once translated (see ``HostChain``).
    let hosts: UnsafeMutablePointer<UnsafeMutableRawPointer>

    /// Publishes the completions of a burst that took frames, signalling the front-end when it
    /// asked; throws the ring's violation, if the front-end broke it.
    @inline(__always)
    func publish(took frames: Int) throws(VirtioError) {
        if frames > 0, ring.publishUsed() { try vring.notifyCall() }
        if let violation = ring.violation { throw .ringViolation(violation) }
    }
}

/// A receive ring and the scratch space the chains one frame fills are gathered into.
struct ReceiveTarget<Ring: BackendRing> {
    let ring: Ring
    let vring: BackendVring
    let segments: UnsafeMutablePointer<ChainSegment>
    /// Our addresses of the gathered segments (translated as they are gathered).
    let hosts: UnsafeMutablePointer<UnsafeMutableRawPointer>
    let heads: UnsafeMutablePointer<UInt16>
    let capacities: UnsafeMutablePointer<Int>
    /// VIRTIO_NET_F_MRG_RXBUF: a frame may fill several receive chains.
    let mergeable: Bool

    /// Marks the first `chains` gathered chains used with the bytes each got (`total`: header
    /// and frame), and takes them.
    @inline(__always)
    func finish(chains: Int, total: Int) {
        var remaining = total
        for c in 0..<chains {
            let written = min(remaining, capacities[c])
            ring.putUsed(head: heads[c], length: UInt32(written))
            remaining &-= written
        }
        ring.skipAvailable(chains)
    }

    /// Publishes what was delivered, signalling the front-end when it asked; throws the
    /// ring's violation, if the front-end broke it.
    @inline(__always)
    func publish(delivered frames: Int) throws(VirtioError) {
        if frames > 0, ring.publishUsed() { try vring.notifyCall() }
        if let violation = ring.violation { throw .ringViolation(violation) }
    }
}

/// Work on one queue pair, written once for both ring formats.
protocol PairWork {
    associatedtype Result
    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) -> Result
}

extension BackendDataPath {
    /// Runs `work` on queue pair `index` in the session's ring format: the one place the
    /// format is chosen (a branch per call, never per frame of a burst).
    @inline(__always)
    func withPair<Work: PairWork>(_ index: Int, _ work: Work) throws(VirtioError) -> Work.Result {
        let rxVring = vrings[index &* 2], txVring = vrings[index &* 2 &+ 1]
        if packedRings {
            let pair = PairRings<PackedRingDevice>(index: index, rxVring: rxVring, txVring: txVring, mergeable: mergeable)
            return try work.run(pair, on: self)
        }
        let pair = PairRings<SplitRingDevice>(index: index, rxVring: rxVring, txVring: txVring, mergeable: mergeable)
        return try work.run(pair, on: self)
    }
}
