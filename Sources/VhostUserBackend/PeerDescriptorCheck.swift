#if canImport(Glibc)
import Glibc
#endif
import VhostUser
import VirtioCore

/// A descriptor a front-end sends is whatever it chose to send. A kick or call fd must be an
/// eventfd: a pipe would raise SIGPIPE on our write once its reader is gone, and a pipe, FIFO,
/// socket or file can block a read or write and with it every session this thread serves.
enum PeerDescriptorCheck {
    /// What `/proc/self/fd` says `fd` is ("anon_inode:[eventfd]", "pipe:[…]", a path…), nil
    /// where /proc is not mounted.
    static func kind(of fd: Int32) -> String? {
        var target = [CChar](repeating: 0, count: 256)
        let length = readlink("/proc/self/fd/\(fd)", &target, target.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: target.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Throws unless `descriptor` is an eventfd; then makes it non-blocking (the flag lives in
    /// the open file the peer shares, so this is a default, not a guarantee: reads and writes
    /// on it still treat "not ready" as nothing to do).
    static func requireEventFD(_ descriptor: OwnedDescriptor, _ request: VhostUserRequest, ring: UInt32) throws(VirtioError) {
        let fd = descriptor.raw
        if let kind = kind(of: fd) {
            guard kind == "anon_inode:[eventfd]" else {
                throw .peerProtocol(.badFileDescriptors(request: "\(request) for ring \(ring)", problem: "it carries \(describe(kind)), not an eventfd; kick and call fds must be eventfds"))
            }
        } else {
            // No /proc: at least refuse what is not an anonymous inode (pipes, sockets, files).
            var status = stat()
            guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == 0 else {
                throw .peerProtocol(.badFileDescriptors(request: "\(request) for ring \(ring)", problem: "it carries a descriptor that is not an eventfd; kick and call fds must be eventfds"))
            }
        }
        let flags = fcntl(fd, F_GETFL)
        if flags >= 0 && flags & O_NONBLOCK == 0 { _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }

    private static func describe(_ kind: String) -> String {
        if kind.hasPrefix("pipe:") { return "a pipe" }
        if kind.hasPrefix("socket:") { return "a socket" }
        if kind.hasPrefix("anon_inode:") {
            return "a " + kind.dropFirst("anon_inode:".count).filter { $0 != "[" && $0 != "]" }
        }
        if kind.hasPrefix("/") { return "the file \(kind)" }
        return "'\(kind)'"
    }
}
