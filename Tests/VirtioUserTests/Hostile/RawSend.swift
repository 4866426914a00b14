#if canImport(Glibc)
import Glibc
#endif
import VirtioCore

/// Sends `bytes` with any number of fds attached (the library's sender stops at 16, as a
/// well-behaved peer would; a hostile one does not). One sendmsg with SCM_RIGHTS, built by
/// hand because the CMSG_* macros do not import.
func sendRaw(_ bytes: [UInt8], descriptors: [Int32], on socket: Int32) throws {
    let headerSize = MemoryLayout<cmsghdr>.size
    let dataSize = descriptors.count * MemoryLayout<Int32>.size
    var control = [UInt8](repeating: 0, count: descriptors.isEmpty ? 0 : headerSize + (dataSize + 7) & ~7)
    control.withUnsafeMutableBytes { raw in
        guard !descriptors.isEmpty else { return }
        raw.storeBytes(of: headerSize + dataSize, toByteOffset: 0, as: Int.self)   // cmsg_len
        raw.storeBytes(of: Int32(SOL_SOCKET), toByteOffset: 8, as: Int32.self)     // cmsg_level
        raw.storeBytes(of: Int32(1), toByteOffset: 12, as: Int32.self)             // SCM_RIGHTS
        for (i, fd) in descriptors.enumerated() {
            raw.storeBytes(of: fd, toByteOffset: headerSize + 4 * i, as: Int32.self)
        }
    }
    var payload = bytes
    let sent = payload.withUnsafeMutableBytes { data in
        control.withUnsafeMutableBytes { controlBytes in
            var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
            return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                var message = msghdr()
                message.msg_iov = vectorPointer
                message.msg_iovlen = 1
                if !descriptors.isEmpty {
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                }
                return sendmsg(socket, &message, Int32(MSG_NOSIGNAL))
            }
        }
    }
    guard sent == bytes.count else { throw VirtioError.system("sendmsg of raw bytes", errno: errno) }
}

/// A vhost-user header exactly as given, then `payload`.
func rawMessage(request: UInt32, flags: UInt32, size: UInt32, payload: [UInt8] = []) -> [UInt8] {
    var bytes: [UInt8] = []
    for value in [request, flags, size] { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    return bytes + payload
}
