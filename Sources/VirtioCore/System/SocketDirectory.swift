#if canImport(Glibc)
import Glibc
#endif

/// A directory a socket will appear in: what a container gets when the host mounts the
/// directory its switch puts sockets in (userspace CNI's shared directory), before the switch
/// has made the socket.
enum SocketDirectory {
    /// The names of the sockets in `directory` (none when it does not exist yet), sorted.
    static func sockets(in directory: String) -> [String] {
        guard let stream = opendir(directory) else { return [] }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard name != ".", name != ".." else { continue }
            var info = stat()
            if lstat(directory + "/" + name, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK {
                names.append(name)
            }
        }
        return names.sorted()
    }
}
