#if canImport(Glibc)
import Glibc
#endif

/// Who may connect to a listening socket file: its permission bits and its group, set as soon
/// as it is bound (as OVS and userspace CNI plugins set theirs), so that the users of one
/// group — a container's — can connect without the socket being writable by everyone.
public struct SocketFileAccess: Sendable, Equatable {
    /// Permission bits, such as 0o660; nil keeps what the umask gave.
    public var mode: UInt32?
    /// The group, by name or number; nil keeps the creating process's.
    public var group: String?

    public init(mode: UInt32? = nil, group: String? = nil) {
        self.mode = mode
        self.group = group
    }

    /// Parses permission bits written in octal ("660", "0660"); nil for anything else.
    @usableFromInline package static func parseMode(_ text: String) -> UInt32? {
        guard let mode = UInt32(text, radix: 8), mode <= 0o7777 else { return nil }
        return mode
    }

    /// Checks that ``group`` names a group here (before anything is bound).
    @usableFromInline package func validate() throws(VirtioError) {
        if let group { _ = try Self.groupID(group) }
    }

    /// Sets the mode and group of the file at `path`.
    func apply(to path: String) throws(VirtioError) {
        if let group {
            let id = try Self.groupID(group)
            _ = try SystemCall.run("chown(\(path), group \(group))", hint: "Only root, or a member of the group, may give a file to a group.") {
                chown(path, uid_t.max, id)
            }
        }
        if let mode {
            _ = try SystemCall.run("chmod(\(path), \(String(mode, radix: 8)))") { chmod(path, mode_t(mode)) }
        }
    }

    static func groupID(_ group: String) throws(VirtioError) -> gid_t {
        if let number = gid_t(group) { return number }
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getgrnam_r(group, &entry, &buffer, buffer.count, &result) == 0, let found = result else {
            throw .invalid("group", group, "give a group that exists here (see /etc/group), by name or number")
        }
        return found.pointee.gr_gid
    }
}
