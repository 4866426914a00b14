/// A pod's annotations as Kubernetes' downward API writes them into a file (`fieldPath:
/// metadata.annotations`): one `key="value"` line per annotation, the value quoted the way Go's
/// `%q` quotes strings. That is how a container reads Multus' network-status annotation, and
/// with it the device-info of its vhost-user interfaces.
enum DownwardAPIAnnotations {
    /// The annotation that carries the attachments' device-info.
    static let networkStatus = "k8s.v1.cni.cncf.io/network-status"
    /// Userspace CNI's own annotations (it gives Multus no device-info): each attachment's
    /// container-side configuration, and where its socket directory is mounted.
    static let userspaceConfiguration = "userspace/configuration-data"
    static let userspaceMappedDirectory = "userspace/mapped-dir"
    /// Userspace CNI's mount point when the pod names none.
    static let userspaceDefaultMappedDirectory = "/var/lib/cni/usrspcni"

    /// The value of annotation `key`, unquoted; nil when it is absent or not validly quoted.
    static func value(of key: String, in text: [UInt8]) -> [UInt8]? {
        let prefix = Array(key.utf8) + [UInt8(ascii: "=")]
        for line in text.split(separator: UInt8(ascii: "\n")) where line.starts(with: prefix) {
            return unquote(line.dropFirst(prefix.count))
        }
        return nil
    }

    /// Undoes Go's `strconv.Quote`: `"…"` with \a \b \f \n \r \t \v \\ \" \' and \xHH,
    /// \uHHHH, \UHHHHHHHH escapes.
    static func unquote(_ quoted: ArraySlice<UInt8>) -> [UInt8]? {
        guard quoted.count >= 2, quoted.first == UInt8(ascii: "\""), quoted.last == UInt8(ascii: "\"") else { return nil }
        let body = Array(quoted.dropFirst().dropLast())
        var result: [UInt8] = []
        result.reserveCapacity(body.count)
        var i = 0
        while i < body.count {
            let byte = body[i]
            i += 1
            if byte == UInt8(ascii: "\"") { return nil }
            guard byte == UInt8(ascii: "\\") else { result.append(byte); continue }
            guard i < body.count else { return nil }
            let escape = body[i]
            i += 1
            switch escape {
            case UInt8(ascii: "a"): result.append(0x07)
            case UInt8(ascii: "b"): result.append(0x08)
            case UInt8(ascii: "f"): result.append(0x0C)
            case UInt8(ascii: "n"): result.append(0x0A)
            case UInt8(ascii: "r"): result.append(0x0D)
            case UInt8(ascii: "t"): result.append(0x09)
            case UInt8(ascii: "v"): result.append(0x0B)
            case UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "'"): result.append(escape)
            case UInt8(ascii: "x"), UInt8(ascii: "u"), UInt8(ascii: "U"):
                let digits = escape == UInt8(ascii: "x") ? 2 : escape == UInt8(ascii: "u") ? 4 : 8
                guard i + digits <= body.count, let value = UInt32(String(decoding: body[i..<(i + digits)], as: UTF8.self), radix: 16) else {
                    return nil
                }
                i += digits
                if escape == UInt8(ascii: "x") {
                    result.append(UInt8(value))
                } else {
                    guard let scalar = Unicode.Scalar(value) else { return nil }
                    result += Array(String(Character(scalar)).utf8)
                }
            default: return nil
            }
        }
        return result
    }
}
