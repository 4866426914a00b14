import VirtioCore

/// Where a switch port's frames go: the switch's address table and its other ports.
protocol FrameRouter: AnyObject {
    /// Sends one frame (translated in its sender's memory) from `port` where it belongs;
    /// false leaves it, and the frames behind it, on the sender's ring for later: back-pressure.
    func route(from port: Int, _ chain: HostChain, length: Int) throws(VirtioError) -> Bool
}

/// A switch port's data path: frames from its front-end's transmit ring (queue pair 0) are
/// offered to the router in order; other ports' frames reach its receive ring through
/// ``BackendDataPath/receiveRoom(length:)`` and ``BackendDataPath/deliver(_:length:chains:segments:)``.
/// Each side works in its own port's ring format, so a packed port and a split port exchange
/// frames. Nothing here allocates.
struct SwitchPort<Router: FrameRouter>: FrameForwarding {
    /// Unowned: the router outlives every burst, and a reference count per burst buys nothing.
    unowned(unsafe) let router: Router
    let port: Int
    let burst: Int

    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) -> Int {
        guard pair.index == 0, let tx = pair.tx else { return 0 }
        let count = min(tx.ring.availableCount(), burst)
        let chainCapacity = BackendDataPath.chainCapacity(tx.ring)
        var done = 0
        while done < count {
            guard let head = tx.ring.peekAvailable(ahead: 0),
                  let n = path.readChain(tx.ring, head: head, into: tx.segments, capacity: chainCapacity) else { break }
            let length = try path.frameLength(tx.segments, n)
            // Every segment inside this front-end's memory before any copy starts: a bad one is
            // the sender's violation, never blamed on a port the frame was going to.
            let chain = try path.memory.translate(tx.segments, n, into: tx.hosts)
            guard try router.route(from: port, chain, length: length) else { break }
            tx.ring.skipAvailable(1)
            tx.ring.putUsed(head: head, length: 0)
            done &+= 1
        }
        path.indirectTablesRead = 0
        // Completions before any copy is published on another port (see ``Loopback``).
        try tx.publish(took: done)
        return done
    }

    /// Work is a frame on the port's transmit ring.
    func hasWork(on path: BackendDataPath) -> Bool {
        (path.vrings[1].ring?.availableCount() ?? 0) > 0
    }
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

/// The receiving half of a switch port, on queue pair 0.
extension BackendDataPath {
    /// Looks for room for a frame of `length` bytes on the receive ring, keeping the chains
    /// found in the ring's scratch space for ``deliver(_:length:chains:segments:)``.
    func receiveRoom(length: Int) throws(VirtioError) -> ReceiveRoom {
        try withPair(0, RoomQuery(length: length))
    }

    /// Copies a frame (translated in its sender's memory) into the receive chains
    /// ``receiveRoom(length:)`` just found and translated (`chains` chains of `segments`
    /// segments); published by ``publishReceived()``.
    func deliver(_ source: HostChain, length: Int, chains: Int, segments: Int) {
        try? withPair(0, Delivery(source: source, length: length, chains: chains, segments: segments))
    }

    /// Makes the frames delivered since the last call visible, notifying when asked. Throws
    /// when the front-end made its call fd block or broke the ring.
    func publishReceived() throws(VirtioError) {
        try withPair(0, PublishReceived())
    }

    /// The first 12 bytes of a frame (destination and source MAC), past the virtio-net header;
    /// false when the frame is shorter.
    static func readAddresses(_ chain: HostChain, into bytes: UnsafeMutableRawPointer) -> Bool {
        var reader = ChainReader(chain, from: VirtioNetHeader.size)
        return reader.read(into: bytes, count: 12) == 12
    }
}

private struct RoomQuery: PairWork {
    let length: Int

    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) -> ReceiveRoom {
        guard let rx = pair.rx else { return .absent }
        let available = rx.ring.availableCount()
        guard available > 0 else { return rx.ring.violation == nil ? .full : .absent }
        let total = VirtioNetHeader.size + length
        guard let (chains, segments, capacity) = try path.gatherReceiveChains(rx, available: available, needed: total) else {
            throw rx.ring.violation.map { .ringViolation($0) } ?? .peerProtocol(.badFrame(problem: "a receive chain could not be read"))
        }
        if capacity >= total { return .ready(chains: chains, segments: segments) }
        return rx.mergeable ? .full : .tooLong
    }
}

private struct Delivery: PairWork {
    let source: HostChain
    let length: Int
    let chains: Int
    let segments: Int

    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) {
        guard let rx = pair.rx else { return }
        let received = HostChain(segments: rx.segments, hosts: rx.hosts, count: segments)
        path.copyFrame(from: source, to: rx, received, chains: chains, frameLength: length, offload: VirtioNetOffload())
        rx.finish(chains: chains, total: VirtioNetHeader.size &+ length)
    }
}

private struct PublishReceived: PairWork {
    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) {
        guard let rx = pair.rx else { return }
        try rx.publish(delivered: 1)
    }
}
