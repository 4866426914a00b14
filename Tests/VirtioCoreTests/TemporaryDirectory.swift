#if canImport(Glibc)
import Glibc
#endif
import VirtioCore

/// A private directory under /tmp for socket files (short paths: sun_path holds 107 bytes),
/// removed with everything in it when the object goes away.
final class TemporaryDirectory {
    let path: String

    init() throws {
        var template = Array("/tmp/vcore-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw VirtioError.system("mkdtemp(/tmp/vcore-XXXXXX)", errno: errno) }
        path = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit {
        if let dir = opendir(path) {
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { _ = unlink(file(name)) }
            }
            closedir(dir)
        }
        _ = rmdir(path)
    }
}
