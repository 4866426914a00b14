#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// The address in network order: 4 bytes for IPv4, 16 for IPv6 (kept inline, no heap).
    private let high: UInt64
    private let low: UInt64
    /// True for IPv4.
    public let isIPv4: Bool

    /// Parses dotted-quad IPv4 (`192.0.2.2`) or IPv6 text (`fe80::1`); nil for anything else.
    public init?(_ text: String) {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            self.init(ipv4Bytes: withUnsafeBytes(of: v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, text, &v6) == 1 else { return nil }
        self.init(ipv6Bytes: withUnsafeBytes(of: v6) { Array($0) })
    }

    /// An IPv4 address from its four bytes, first byte first.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        self.init(ipv4Bytes: [a, b, c, d])
    }

    init(ipv4Bytes bytes: [UInt8]) {
        high = 0
        low = bytes.reduce(0) { $0 << 8 | UInt64($1) }
        isIPv4 = true
    }

    init(ipv6Bytes bytes: [UInt8]) {
        high = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        low = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
        isIPv4 = false
    }

    /// The address's bytes in network order (4 or 16).
    public var bytes: [UInt8] {
        if isIPv4 { return (0..<4).map { UInt8(truncatingIfNeeded: low >> (24 - 8 * $0)) } }
        return (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * $0)) }
    }

    /// True for an IPv6 link-local address (fe80::/10).
    public var isLinkLocal: Bool { !isIPv4 && high >> 54 == 0x3FA }

    public var description: String {
        let family = isIPv4 ? AF_INET : AF_INET6
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        return bytes.withUnsafeBytes { raw in
            guard inet_ntop(family, raw.baseAddress, &text, socklen_t(text.count)) != nil else { return "?" }
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}

/// An address and a port: one end of a UDP exchange or a TCP connection.
public struct IPEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    public var description: String { address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)" }
}
