import VirtioCore

/// ``BackendMode/loopback``: each frame a front-end transmits on pair n comes back on pair n's
/// receive ring, byte for byte (offload requests passed on, or carried out, per what it
/// negotiated). A frame is taken only once there are receive buffers for it, so the front-end
/// sees back-pressure (a full transmit ring) rather than loss.
struct Loopback: FrameForwarding {
    let burst: Int
    let counters: BackendCounters

    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) -> Int {
        guard let tx = pair.tx, let rx = pair.rx else { return 0 }
        let done = try path.loopback(from: tx, to: rx, burst: burst, counters: counters, pair: pair.index)
        path.countIndirectTables(into: counters)
        // Transmit completions before the looped-back copies: a front-end that re-sends what it
        // receives (testpmd io) must find its transmit buffers returned by the time the copies
        // arrive. DPDK's in-order transmit path frees descriptors only from completions already
        // visible, and with 32 jumbo frames outstanding it found none and dropped frames.
        try tx.publish(took: done)
        try rx.publish(delivered: done)
        return done
    }

    /// Work is a frame to take with somewhere to put it: receive buffers waiting on their own
    /// are not work, and a refill kick wakes the loop when they were what was missing.
    func hasWork(on path: BackendDataPath) -> Bool {
        var pair = 0
        while pair &* 2 &+ 1 < path.vrings.count {
            if let tx = path.vrings[pair &* 2 &+ 1].ring, tx.availableCount() > 0,
               let rx = path.vrings[pair &* 2].ring, rx.availableCount() > 0 { return true }
            pair &+= 1
        }
        return false
    }
}

extension BackendDataPath {
    fileprivate func loopback<Ring: BackendRing>(
        from tx: TransmitSource<Ring>, to rx: ReceiveTarget<Ring>, burst: Int,
        counters: BackendCounters, pair: Int
    ) throws(VirtioError) -> Int {
        let count = min(tx.ring.availableCount(), burst)
        let chainCapacity = Self.chainCapacity(tx.ring)
        var rxAvailable = rx.ring.availableCount()
        var bytes = 0
        var sent = 0
        var dropped = 0
        var done = 0
        while done < count, rxAvailable > 0 {
            guard let head = tx.ring.peekAvailable(ahead: 0),
                  let txCount = readChain(tx.ring, head: head, into: tx.segments, capacity: chainCapacity) else { break }
            let length = try frameLength(tx.segments, txCount)
            let total = VirtioNetHeader.size + length
            guard let (chains, segmentCount, capacity) = try gatherReceiveChains(rx, available: rxAvailable, needed: total) else { break }
            if capacity < total && rx.mergeable {
                // Not enough receive buffers yet for this frame: leave it for the next burst.
                break
            }
            tx.ring.skipAvailable(1)
            let source = try memory.translate(tx.segments, txCount, into: tx.hosts)
            if let frameObserver { frameObserver(Self.digest(source), length) }
            // Offload requests are read only when the front-end may make them.
            let action = sendsOffloads ? try offloadAction(source, frameLength: length) : .deliver(VirtioNetOffload())
            if case .drop = action {
                dropped &+= 1
            } else if capacity >= total {
                var delivered = VirtioNetOffload()
                if case .deliver(let offload) = action { delivered = offload }
                let received = HostChain(segments: rx.segments, hosts: rx.hosts, count: segmentCount)
                copyFrame(from: source, to: rx, received, chains: chains, frameLength: length, offload: delivered)
                if case .computeChecksum(let start, let offset) = action {
                    Self.fillChecksum(received, start: start, offset: offset, frameLength: length)
                }
                rx.finish(chains: chains, total: total)
                rxAvailable &-= chains
                sent &+= 1
            } else {
                // One receive buffer, too small for the frame (no mergeable buffers): drop the
                // frame, keep the buffer.
                dropped &+= 1
            }
            tx.ring.putUsed(head: head, length: 0)
            bytes &+= length
            done &+= 1
        }
        counters.addBurst(pair: pair, taken: done, bytes: bytes, sent: sent, dropped: dropped)
        return done
    }
}
