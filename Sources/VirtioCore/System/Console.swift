#if canImport(Glibc)
import Glibc
#endif

/// Output helpers for the command-line tools (glibc's `stdout`/`stderr` globals are not
/// concurrency-safe in Swift 6).
public enum Console {
    /// Writes `line` and a newline to standard error, unbuffered.
    public static func error(_ line: String) {
        let text = line + "\n"
        var utf8 = Array(text.utf8)
        var written = 0
        while written < utf8.count {
            let n = utf8.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + written, $0.count - written) }
            if n <= 0 { return }
            written += n
        }
    }

    /// Flushes buffered standard output (so a parent reading a pipe sees lines at once).
    public static func flush() {
        fflush(nil)
    }
}
