import VirtioCore

/// A descriptor chain translated into our address space once, when it is taken: span `i` is
/// `hosts[i]`, `segments[i].length` bytes long. Every walk over a chain's bytes — skipping the
/// header, copying, gathering, checksumming, building a writev — goes through ``ChainReader`` and
/// ``ChainWriter`` over these spans, and none translates an address again.
struct HostChain {
    let segments: UnsafeMutablePointer<ChainSegment>
    let hosts: UnsafeMutablePointer<UnsafeMutableRawPointer>
    let count: Int
}

extension GuestMemoryMap {
    /// Translates a chain's `count` segments into `hosts`; a protocol violation when one is
    /// not entirely inside one region.
    @inline(__always)
    func translate(
        _ segments: UnsafeMutablePointer<ChainSegment>, _ count: Int, into hosts: UnsafeMutablePointer<UnsafeMutableRawPointer>
    ) throws(VirtioError) -> HostChain {
        var i = 0
        while i < count {
            hosts[i] = try translate(segments[i])
            i &+= 1
        }
        return HostChain(segments: segments, hosts: hosts, count: count)
    }
}

/// Reads a chain's bytes in order, from a starting position (past the virtio-net header, for
/// a frame). A struct with mutating methods, not a closure: nothing to box per frame.
struct ChainReader {
    private let chain: HostChain
    private var index = 0
    private var offset = 0

    /// A reader at byte `position` of the chain (at its end when the chain is shorter).
    @inline(__always)
    init(_ chain: HostChain, from position: Int) {
        self.chain = chain
        var skip = position
        while index < chain.count {
            let length = Int(chain.segments[index].length)
            if skip < length { break }
            skip &-= length
            index &+= 1
        }
        offset = skip
    }

    /// The next contiguous bytes, at most `limit` of them; nil at the end of the chain.
    @inline(__always)
    mutating func next(limit: Int = .max) -> (pointer: UnsafeMutableRawPointer, count: Int)? {
        while index < chain.count {
            let room = Int(chain.segments[index].length) &- offset
            if room > 0, limit > 0 {
                let n = min(room, limit)
                let pointer = chain.hosts[index] + offset
                offset &+= n
                return (pointer, n)
            }
            if limit <= 0 { return nil }
            index &+= 1
            offset = 0
        }
        return nil
    }

    /// Copies the next `count` bytes (fewer at the end of the chain) to `destination`;
    /// returns how many it copied.
    @inline(__always)
    mutating func read(into destination: UnsafeMutableRawPointer, count: Int) -> Int {
        var copied = 0
        while copied < count, let (pointer, n) = next(limit: count &- copied) {
            (destination + copied).copyMemory(from: pointer, byteCount: n)
            copied &+= n
        }
        return copied
    }
}

/// Writes bytes in order into a chain (a receive chain whose capacity the caller checked),
/// from a starting position.
struct ChainWriter {
    private var reader: ChainReader

    @inline(__always)
    init(_ chain: HostChain, from position: Int = 0) {
        reader = ChainReader(chain, from: position)
    }

    /// Writes `length` bytes from `source` (fewer if the chain ends first).
    @inline(__always)
    mutating func write(_ source: UnsafeRawPointer, _ length: Int) {
        var done = 0
        while done < length, let (pointer, n) = reader.next(limit: length &- done) {
            pointer.copyMemory(from: source + done, byteCount: n)
            done &+= n
        }
    }
}
