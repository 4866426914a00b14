import VirtioCore

/// The two halves of switching a frame between front-ends: a port's transmit ring gives frames
/// up, other ports' receive rings take copies. Each side dispatches on its own ring format, so
/// a packed port and a split port exchange frames. Nothing here allocates.
extension BackendDataPath {
    /// Offers up to `burst` frames from queue pair 0's transmit ring to `route`, in order, with
    /// their segments (in this front-end's memory) and frame length. `route` returns false to
    /// leave a frame (and those behind it) on the ring for later: back-pressure. Returns the
    /// frames taken; their completions are published before returning.
    func takeTransmitted(
        burst: Int, _ route: (UnsafeMutablePointer<ChainSegment>, Int, Int) throws(VirtioError) -> Bool
    ) throws(VirtioError) -> Int {
        let vring = vrings[1]
        guard vring.enabled, let segments = vring.segments else { return 0 }
        if let ring = vring.split { return try takeTransmitted(ring, vring, segments, burst, route) }
        if let ring = vring.packed { return try takeTransmitted(ring, vring, segments, burst, route) }
        return 0
    }

    private func takeTransmitted<Ring: DeviceRing>(
        _ tx: Ring, _ vring: BackendVring, _ segments: UnsafeMutablePointer<ChainSegment>, _ burst: Int,
        _ route: (UnsafeMutablePointer<ChainSegment>, Int, Int) throws(VirtioError) -> Bool
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
            for i in 0..<n { _ = try memory.translate(segments[i]) }
            guard try route(segments, n, length) else { break }
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
        /// Gathered: `deliver` will put it in this many chains.
        case ready(chains: Int)
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
        guard let (chains, _, capacity) = try gatherReceiveChains(target, available: available, needed: total) else {
            throw VirtioError(.protocolViolation, rx.violation ?? "a receive chain could not be read")
        }
        if capacity >= total { return .ready(chains: chains) }
        return mergeable ? .full : .tooLong
    }

    /// Copies a frame (segments in `sourceMemory`) into the receive chains
    /// ``receiveRoom(length:)`` just found; published by ``publishReceived()``.
    func deliver(
        _ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int, from sourceMemory: GuestMemoryMap,
        length: Int, chains: Int
    ) throws(VirtioError) {
        let vring = vrings[0]
        if let ring = vring.split, let target = receiveTarget(ring, vring) {
            try copyFrame(from: segments, count, in: sourceMemory, to: target, chains: chains, frameLength: length, offload: VirtioNetOffload()) {}
        } else if let ring = vring.packed, let target = receiveTarget(ring, vring) {
            try copyFrame(from: segments, count, in: sourceMemory, to: target, chains: chains, frameLength: length, offload: VirtioNetOffload()) {}
        }
    }

    /// Makes the frames delivered since the last call visible, notifying when asked. Throws
    /// when the front-end made its call fd block.
    func publishReceived() throws(VirtioError) {
        let vring = vrings[0]
        let notify = vring.split?.publishUsed() ?? vring.packed?.publishUsed() ?? false
        if notify { try vring.notifyCall() }
    }

    private func receiveTarget<Ring: DeviceRing>(_ ring: Ring, _ vring: BackendVring) -> ReceiveTarget<Ring>? {
        guard let segments = vring.segments, let heads = vring.mergeHeads, let capacities = vring.mergeCapacities else { return nil }
        return ReceiveTarget(ring: ring, segments: segments, heads: heads, capacities: capacities, mergeable: mergeable)
    }

    /// The first 12 bytes of a frame (destination and source MAC) from its transmit segments,
    /// past the virtio-net header; false when the frame is shorter.
    func readAddresses(_ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int, into bytes: UnsafeMutableRawPointer) throws(VirtioError) -> Bool {
        var skip = VirtioNetHeader.size
        var copied = 0
        var i = 0
        while i < count, copied < 12 {
            let length = Int(segments[i].length)
            if skip >= length {
                skip -= length
                i &+= 1
                continue
            }
            let n = min(length - skip, 12 - copied)
            (bytes + copied).copyMemory(from: try memory.translate(segments[i]) + skip, byteCount: n)
            copied &+= n
            skip = 0
            i &+= 1
        }
        return copied == 12
    }
}
