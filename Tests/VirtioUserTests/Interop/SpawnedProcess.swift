#if canImport(Glibc)
import Glibc
#endif
import Foundation
import VirtioCore

/// A child started with posix_spawn, its output in files, reaped with waitpid. The OVS tests use
/// it instead of Foundation's `Process`, whose `waitUntilExit` never returned for a script that
/// had started OVS's daemons with `--detach` (the script exited, a zombie nobody reaped).
final class SpawnedProcess {
    let pid: pid_t
    let outputPath: String
    let errorsPath: String
    private(set) var status: Int32?

    init(_ path: String, _ arguments: [String], output: String, errors: String) throws {
        outputPath = output
        errorsPath = errors
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, path, &actions, nil, argv, environ)
        guard result == 0 else { throw TestFailure("posix_spawn \(path): errno \(result)") }
        pid = child
    }

    deinit {
        if status == nil {
            kill(pid, SIGKILL)
            _ = wait(seconds: 10)
        }
    }

    /// The exit status (128 + signal when killed), or nil while it runs.
    private func reap() -> Int32? {
        if let status { return status }
        var raw: Int32 = 0
        guard waitpid(pid, &raw, WNOHANG) == pid else { return nil }
        let signal = raw & 0x7F
        status = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
        return status
    }

    /// Waits up to `seconds` for it to end; its status, or nil if it still runs.
    func wait(seconds: Double) -> Int32? {
        _ = waitUntil(seconds: seconds) { reap() != nil }
        return reap()
    }

    func signal(_ number: Int32) { if status == nil { kill(pid, number) } }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOfFile: errorsPath, encoding: .utf8)) ?? "" }
}

/// Runs a program to completion (at most `seconds`, then SIGKILL) through ``SpawnedProcess``.
func runSpawned(_ path: String, _ arguments: [String], seconds: Double = 120) throws -> (status: Int32, output: String, errors: String) {
    let base = NSTemporaryDirectory() + "spawned-\(UUID().uuidString.prefix(8))"
    defer {
        try? FileManager.default.removeItem(atPath: base + ".out")
        try? FileManager.default.removeItem(atPath: base + ".err")
    }
    let child = try SpawnedProcess(path, arguments, output: base + ".out", errors: base + ".err")
    guard let status = child.wait(seconds: seconds) else {
        child.signal(SIGKILL)
        _ = child.wait(seconds: 10)
        throw TestFailure("\(path) \(arguments.joined(separator: " ")) did not finish within \(seconds) s: \(child.errors)")
    }
    return (status, child.output, child.errors)
}
