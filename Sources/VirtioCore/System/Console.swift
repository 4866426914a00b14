#if canImport(Glibc)
import Glibc
#endif

/// Output helpers for the command-line tools (glibc's `stdout`/`stderr` globals are not
/// concurrency-safe in Swift 6).
@usableFromInline package enum Console {
    /// Writes `line` and a newline to standard error, unbuffered.
    @usableFromInline package static func error(_ line: String) {
        errorRaw(line + "\n")
    }

    /// Writes `text` to standard error as it is (no newline added): for a progress line that
    /// rewrites itself with a carriage return.
    @usableFromInline package static func errorRaw(_ text: String) {
        var utf8 = Array(text.utf8)
        var written = 0
        while written < utf8.count {
            let n = utf8.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + written, $0.count - written) }
            if n <= 0 { return }
            written += n
        }
    }

    /// True when standard error is a terminal.
    @usableFromInline package static var errorIsTerminal: Bool { isatty(2) == 1 }

    /// Flushes buffered standard output (so a parent reading a pipe sees lines at once).
    @usableFromInline package static func flush() {
        fflush(nil)
    }
}
