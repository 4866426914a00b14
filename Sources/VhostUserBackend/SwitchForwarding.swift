import VirtioCore

/// The two halves of switching a frame between front-ends: a port's transmit ring gives frames
/// up, other ports' receive rings take copies. Each side dispatches on its own ring format, so
/// a packed port and a split port exchange frames. Nothing here allocates.
extension BackendDataPath {
    /// Offers up to `burst` frames from queue pair 0's transmit ring to `route`, in order, each
    /// translated (in this front-end's memory) with its frame length. `route` returns false to
    /// leave a frame (and those behind it) on the ring for later: back-pressure. Returns the
    /// frames taken; their completions are published before returning.
    func takeTransmitted(burst: Int, _ route: (HostChain, Int) throws(VirtioError) -> Bool) throws(VirtioError) -> Int {
        let vring = vrings[1]
        guard vring.enabled, let segments = vring.segments, let hosts = vring.hosts else { return 0 }
        if let ring = vring.split { return try takeTransmitted(ring, vring, segments, hosts, burst, route) }
        if let ring = vring.packed { return try takeTransmitted(ring, vring, segments, hosts, burst, route) }
        return 0
    }

    private func takeTransmitted<Ring: DeviceRing>(
        _ tx: Ring, _ vring: BackendVring, _ segments: UnsafeMutablePointer<ChainSegment>,
        _ hosts: UnsafeMutablePointer<UnsafeMutableRawPointer>, _ burst: Int,
        _ route: (HostChain, Int) throws(VirtioError) -> Bool
    ) throws(VirtioError) -> Int {
        let count = min(tx.availableCount(), burst)
        let chainCapacity = Self.chainCapacity(tx)
        var done = 0
        while done < count {
            guard let head = tx.peekAvailable(ahead: 0),
                  let n = readChain(tx, head: head, into: segments, capacity: chainCapacity) else { break }
            let length = try frameLength(segments, n)
            // Every segment inside this front-end's memory before any copy starts: a bad one is
            // the sender's violation, never blamed on a port the frame was going to.
            let chain = try memory.translate(segments, n, into: hosts)
            guard try route(chain, length) else { break }
            tx.skipAvailable(1)
            tx.putUsed(head: head, length: 0)
            done &+= 1
        }
        if indirectTablesRead != 0 { indirectTablesRead = 0 }
        // Completions before any copy is published on another port (see `forward`).
        if done > 0, tx.publishUsed() { try vring.notifyCall() }
        if let violation = tx.violation { throw VirtioError(.protocolViolation, violation) }
        return done
    }

    /// What a receive ring can do with a frame now.
    enum ReceiveRoom {
        /// Gathered: `deliver` will put it in this many chains, of this many segments.
        case ready(chains: Int, segments: Int)
        /// Not enough buffers posted yet.
        case full
        /// It can never fit (no mergeable buffers, and one buffer is too small): drop it here.
        case tooLong
        /// The ring is not running.
        case absent
    }

    /// Looks for room for a frame of `length` bytes on queue pair 0's receive ring, keeping
    /// the chains found in the ring's scratch space for ``deliver(_:_:from:length:chains:)``.
    func receiveRoom(length: Int) throws(VirtioError) -> ReceiveRoom {
        let vring = vrings[0]
        guard vring.enabled else { return .absent }
        if let ring = vring.split { return try receiveRoom(ring, vring, length) }
        if let ring = vring.packed { return try receiveRoom(ring, vring, length) }
        return .absent
    }

    private func receiveRoom<Ring: DeviceRing>(_ rx: Ring, _ vring: BackendVring, _ length: Int) throws(VirtioError) -> ReceiveRoom {
        guard let target = receiveTarget(rx, vring) else { return .absent }
        let available = rx.availableCount()
        guard available > 0 else { return rx.violation == nil ? .full : .absent }
        let total = VirtioNetHeader.size + length
        guard let (chains, segments, capacity) = try gatherReceiveChains(target, available: available, needed: total) else {
            throw VirtioError(.protocolViolation, rx.violation ?? "a receive chain could not be read")
        }
        if capacity >= total { return .ready(chains: chains, segments: segments) }
        return mergeable ? .full : .tooLong
    }

    /// Copies a frame (translated in its sender's memory) into the receive chains
    /// ``receiveRoom(length:)`` just found and translated (`chains` chains of `segments`
    /// segments); published by ``publishReceived()``.
    func deliver(_ source: HostChain, length: Int, chains: Int, segments: Int) {
        let vring = vrings[0]
        if let ring = vring.split, let target = receiveTarget(ring, vring) {
            deliver(source, to: target, length: length, chains: chains, segments: segments)
        } else if let ring = vring.packed, let target = receiveTarget(ring, vring) {
            deliver(source, to: target, length: length, chains: chains, segments: segments)
        }
    }

    private func deliver<Ring: DeviceRing>(_ source: HostChain, to target: ReceiveTarget<Ring>, length: Int, chains: Int, segments: Int) {
        let received = HostChain(segments: target.segments, hosts: target.hosts, count: segments)
        copyFrame(from: source, to: target, received, chains: chains, frameLength: length, offload: VirtioNetOffload())
        target.finish(chains: chains, frameLength: length)
    }

    /// Makes the frames delivered since the last call visible, notifying when asked. Throws
    /// when the front-end made its call fd block.
    func publishReceived() throws(VirtioError) {
        let vring = vrings[0]
        let notify = vring.split?.publishUsed() ?? vring.packed?.publishUsed() ?? false
        if notify { try vring.notifyCall() }
    }

    /// The first 12 bytes of a frame (destination and source MAC), past the virtio-net header;
    /// false when the frame is shorter.
    static func readAddresses(_ chain: HostChain, into bytes: UnsafeMutableRawPointer) -> Bool {
        var reader = ChainReader(chain, from: VirtioNetHeader.size)
        return reader.read(into: bytes, count: 12) == 12
    }
}
