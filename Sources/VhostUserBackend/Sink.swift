import VirtioCore

/// ``BackendMode/sink``: frames are counted and dropped. Their bytes are never read (nor
/// translated, unless a frame observer wants their digest).
struct Sink: FrameForwarding {
    let burst: Int
    let counters: BackendCounters

    func run<Ring: BackendRing>(_ pair: PairRings<Ring>, on path: BackendDataPath) throws(VirtioError) -> Int {
        guard let tx = pair.tx else { return 0 }
        let done = try path.sink(tx, burst: burst, counters: counters, pairCounters: counters.pairs[pair.index])
        path.countIndirectTables(into: counters)
        try tx.publish(took: done)
        return done
    }
}

extension BackendDataPath {
    fileprivate func sink<Ring: BackendRing>(
        _ tx: TransmitSource<Ring>, burst: Int, counters: BackendCounters, pairCounters: BackendCounters.Pair
    ) throws(VirtioError) -> Int {
        let count = min(tx.ring.availableCount(), burst)
        let chainCapacity = Self.chainCapacity(tx.ring)
        var bytes = 0
        var done = 0
        while done < count {
            guard let head = tx.ring.peekAvailable(ahead: 0),
                  let n = readChain(tx.ring, head: head, into: tx.segments, capacity: chainCapacity) else { break }
            tx.ring.skipAvailable(1)
            let length = try frameLength(tx.segments, n)
            if let frameObserver { frameObserver(Self.digest(try memory.translate(tx.segments, n, into: tx.hosts)), length) }
            bytes &+= length
            tx.ring.putUsed(head: head, length: 0)
            done &+= 1
        }
        BackendCounters.add(counters.framesReceived, done)
        BackendCounters.add(pairCounters.framesReceived, done)
        BackendCounters.add(counters.bytesReceived, bytes)
        return done
    }
}
