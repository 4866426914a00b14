/// Where each source MAC address was last seen: a fixed-size open-addressing table, so learning
/// and looking up allocate nothing. Full, it learns nothing more (those frames are flooded).
struct MACTable {
    /// Slots: a MAC in its low 48 bits (0: empty; an all-zero MAC is never learned), and a port.
    private var keys: [UInt64]
    private var ports: [Int32]
    private let mask: Int
    private(set) var count = 0

    init(capacity: Int = 4096) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = Array(repeating: 0, count: size)
        ports = Array(repeating: -1, count: size)
        mask = size - 1
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

    /// The port `key` was last seen on.
    func port(of key: UInt64) -> Int? {
        var index = slot(key)
        while keys[index] != 0 {
            if keys[index] == key { return Int(ports[index]) }
            index = (index + 1) & mask
        }
        return nil
    }

    /// Records that `key` (a unicast address) is behind `port`.
    mutating func learn(_ key: UInt64, port: Int) {
        guard key != 0, !Self.isGroup(key) else { return }
        var index = slot(key)
        while keys[index] != 0 {
            if keys[index] == key {
                ports[index] = Int32(port)
                return
            }
            index = (index + 1) & mask
        }
        // Keep the table at most half full, so probes stay short.
        guard count * 2 < mask + 1 else { return }
        keys[index] = key
        ports[index] = Int32(port)
        count += 1
    }

    /// Forgets every address behind `port` (its front-end went away).
    mutating func forget(port: Int) {
        let entries = (0...mask).compactMap { keys[$0] != 0 && ports[$0] != Int32(port) ? (keys[$0], Int(ports[$0])) : nil }
        keys = Array(repeating: 0, count: mask + 1)
        ports = Array(repeating: -1, count: mask + 1)
        count = 0
        for (key, other) in entries { learn(key, port: other) }
    }
}
