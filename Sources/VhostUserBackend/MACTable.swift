/// Where each source MAC address was learned: a fixed-size open-addressing table, so learning,
/// looking up, ageing and forgetting allocate nothing.
///
/// Confinement, since every port is a different tenant: an address belongs to the port that
/// taught it until that port's session ends or the address ages out (another port's frames
/// from it are refused); each port may hold at most `limitPerPort` addresses, and the table has
/// room for every port's share, so no port can crowd out another's.
struct MACTable {
    /// Slots: a MAC in its low 48 bits (0: empty; an all-zero MAC is never learned), its port,
    /// and when it was last seen (a monotonic time in nanoseconds).
    private var keys: [UInt64]
    private var ports: [Int32]
    private var lastSeen: [UInt64]
    /// Addresses each port holds.
    private var perPort: [Int]
    private let mask: Int
    let limitPerPort: Int
    let ageingNanoseconds: UInt64
    private(set) var count = 0

    init(ports: Int, limitPerPort: Int, ageingNanoseconds: UInt64) {
        // At most half full with every port at its limit, so probes stay short.
        var size = 16
        while size < ports * limitPerPort * 2 { size <<= 1 }
        keys = Array(repeating: 0, count: size)
        self.ports = Array(repeating: -1, count: size)
        lastSeen = Array(repeating: 0, count: size)
        perPort = Array(repeating: 0, count: ports)
        mask = size - 1
        self.limitPerPort = limitPerPort
        self.ageingNanoseconds = ageingNanoseconds
    }

    /// The 48-bit address at `bytes` (6 bytes, network order) as a key.
    static func key(_ bytes: UnsafeRawPointer) -> UInt64 {
        var key: UInt64 = 0
        for i in 0..<6 { key = key << 8 | UInt64(bytes.load(fromByteOffset: i, as: UInt8.self)) }
        return key
    }

    /// True for a group address (broadcast or multicast): the I/G bit of the first byte.
    static func isGroup(_ key: UInt64) -> Bool { key & 0x0100_0000_0000 != 0 }

    private func slot(_ key: UInt64) -> Int {
        // Fibonacci hashing spreads the vendor-prefixed addresses.
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    private func find(_ key: UInt64) -> Int? {
        var index = slot(key)
        while keys[index] != 0 {
            if keys[index] == key { return index }
            index = (index &+ 1) & mask
        }
        return nil
    }

    private func isFresh(_ index: Int, now: UInt64) -> Bool {
        now &- lastSeen[index] < ageingNanoseconds
    }

    /// The port `key` was learned on, unless it has aged out.
    func port(of key: UInt64, now: UInt64) -> Int? {
        guard let index = find(key), isFresh(index, now: now) else { return nil }
        return Int(ports[index])
    }

    /// Records that `key` was seen as a source on `port`. False when the address belongs to
    /// another port (the frame should be refused); a unicast address beyond the port's limit
    /// is simply not learned (frames to it are flooded).
    mutating func learn(_ key: UInt64, port: Int, now: UInt64) -> Bool {
        guard key != 0, !Self.isGroup(key) else { return true }
        var index = slot(key)
        while keys[index] != 0 {
            if keys[index] == key {
                if ports[index] == Int32(port) {
                    lastSeen[index] = now
                    return true
                }
                guard !isFresh(index, now: now) else { return false }
                // Aged out on its old port: it may move.
                remove(at: index)
                return learn(key, port: port, now: now)
            }
            index = (index &+ 1) & mask
        }
        guard perPort[port] < limitPerPort else { return true }
        keys[index] = key
        ports[index] = Int32(port)
        lastSeen[index] = now
        perPort[port] &+= 1
        count &+= 1
        return true
    }

    /// Forgets every address behind `port` (its front-end went away).
    mutating func forget(port: Int) {
        removeAll(.onPort(Int32(port)))
    }

    /// Forgets every address not seen for the ageing time.
    mutating func expire(now: UInt64) {
        removeAll(.staleAt(now))
    }

    /// One pass over the slots. A removal may shift a later entry into the slot just emptied,
    /// so a slot is looked at again until it keeps what it holds.
    private mutating func removeAll(_ which: Removal) {
        var index = 0
        while index <= mask {
            while keys[index] != 0, matches(index, which) { remove(at: index) }
            index &+= 1
        }
    }

    /// Which entries a sweep removes (an enum, not a closure: the sweep mutates the table).
    private enum Removal {
        case onPort(Int32)
        case staleAt(UInt64)
    }

    private func matches(_ index: Int, _ which: Removal) -> Bool {
        switch which {
        case .onPort(let port): return ports[index] == port
        case .staleAt(let now): return !isFresh(index, now: now)
        }
    }

    /// Empties slot `index` and moves back the entries after it that could no longer be found
    /// (backward-shift deletion for linear probing), so no tombstones accumulate.
    private mutating func remove(at index: Int) {
        perPort[Int(ports[index])] &-= 1
        count &-= 1
        var hole = index
        var next = index
        while true {
            next = (next &+ 1) & mask
            guard keys[next] != 0 else { break }
            let home = slot(keys[next])
            // The entry stays if its home lies cyclically in (hole, next].
            let stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next)
            if stays { continue }
            keys[hole] = keys[next]
            ports[hole] = ports[next]
            lastSeen[hole] = lastSeen[next]
            hole = next
        }
        keys[hole] = 0
        ports[hole] = -1
    }
}
