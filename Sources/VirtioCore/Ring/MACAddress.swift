/// A 48-bit Ethernet address.
public struct MACAddress: Sendable, Hashable, CustomStringConvertible {
    /// The six bytes, in wire order.
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)

    /// Creates an address from its six bytes.
    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        bytes = (b0, b1, b2, b3, b4, b5)
    }

    /// Parses "aa:bb:cc:dd:ee:ff" (or with '-'); nil when it is not six hex bytes.
    public init?(_ text: String) {
        let parts = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var values: [UInt8] = []
        for part in parts {
            guard part.count == 2, part.allSatisfy(\.isHexDigit), let value = UInt8(part, radix: 16) else { return nil }
            values.append(value)
        }
        self.init(values[0], values[1], values[2], values[3], values[4], values[5])
    }

    /// A random, locally administered, unicast address (02:xx:xx:xx:xx:xx family).
    public static func randomLocal() -> MACAddress {
        var generator = SystemRandomNumberGenerator()
        let r = generator.next()
        let b0 = (UInt8(truncatingIfNeeded: r) & 0xFC) | 0x02
        return MACAddress(b0, UInt8(truncatingIfNeeded: r >> 8), UInt8(truncatingIfNeeded: r >> 16),
                          UInt8(truncatingIfNeeded: r >> 24), UInt8(truncatingIfNeeded: r >> 32),
                          UInt8(truncatingIfNeeded: r >> 40))
    }

    /// True for the locally administered bit (bit 1 of the first byte).
    public var isLocallyAdministered: Bool { bytes.0 & 0x02 != 0 }
    /// True for group (multicast/broadcast) addresses.
    public var isMulticast: Bool { bytes.0 & 0x01 != 0 }

    /// Writes the six bytes at `pointer`.
    @usableFromInline package func write(to pointer: UnsafeMutableRawPointer) {
        withUnsafeBytes(of: bytes) { pointer.copyMemory(from: $0.baseAddress!, byteCount: 6) }
    }

    public var description: String {
        let b = [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5]
        return b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    public static func == (a: MACAddress, b: MACAddress) -> Bool {
        a.bytes == b.bytes
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: bytes) { hasher.combine(bytes: $0) }
    }
}
