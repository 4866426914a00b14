#if canImport(Glibc)
import Glibc
#endif

/// A listening AF_UNIX socket that removes its socket file when released — but only if the
/// file at that path is still the one it created, never one another process bound since.
@usableFromInline package final class UnixListener: Sendable {
    /// The listening descriptor.
    @usableFromInline package let descriptor: OwnedDescriptor
    /// Where it listens.
    @usableFromInline package let path: String
    private let identity: FileIdentity?

    /// Listens at `path`, with `access` applied to its file (replacing a stale socket file;
    /// refusing a live one and any other kind of file).
    @usableFromInline package init(path: String, backlog: Int32 = 4, access: SocketFileAccess = .init()) throws(VirtioError) {
        descriptor = try UnixSocket.listen(at: path, backlog: backlog, access: access)
        self.path = path
        // An abstract socket has no file to remove.
        identity = UnixSocket.isAbstract(path) ? nil : FileIdentity(path: path)
    }

    deinit {
        if let identity, FileIdentity(path: path) == identity {
            _ = unlink(path)
        }
    }

    /// Accepts one connection, waiting at most `milliseconds`; nil when the time ran out.
    @usableFromInline package func accept(milliseconds: Int32) throws(VirtioError) -> OwnedDescriptor? {
        try UnixSocket.accept(descriptor, milliseconds: milliseconds)
    }
}

/// Device and inode of a file: tells "the file we made" from "a file now at the same path".
@usableFromInline package struct FileIdentity: Equatable, Sendable {
    @usableFromInline package let device: UInt64
    @usableFromInline package let inode: UInt64

    /// The identity of the file at `path` (not following a final symlink), or nil.
    @usableFromInline package init?(path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}
