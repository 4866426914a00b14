import VirtioUserIP

/// Answers each request on `connection` (request line and headers; any body is skipped by
/// its Content-Length) until the client closes or asks to.
func answer(_ connection: TCPConnection) async throws {
    defer { connection.close() }
    let response = Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n".utf8)
    var pending: [UInt8] = []
    for try await chunk in connection.inbound {
        pending += chunk
        while let end = headerEnd(pending) {
            let head = String(decoding: pending[..<end], as: UTF8.self).lowercased()
            let bodyLength = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst(15).trimmingCharacters(in: " ")) } ?? 0
            guard pending.count >= end + 4 + bodyLength else { break }
            pending.removeFirst(end + 4 + bodyLength)
            try await connection.write(response)
            if head.contains("\r\nconnection: close") { return }
        }
    }
}

/// Where the blank line that ends the headers starts, if it has arrived.
func headerEnd(_ bytes: [UInt8]) -> Int? {
    bytes.firstRange(of: [13, 10, 13, 10])?.lowerBound
}

extension Substring {
    func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let c = s.first, set.contains(c) { s.removeFirst() }
        while let c = s.last, set.contains(c) { s.removeLast() }
        return s
    }
}
