import Foundation
import XCTest

/// One dpdk-testpmd process, started and stopped through Scripts/testpmd.sh (the script users
/// run), with its totals read from its log.
final class TestPMD {
    /// testpmd's "Accumulated forward statistics" at exit.
    struct Totals: Equatable {
        var rxPackets: UInt64
        var rxDropped: UInt64
        var txPackets: UInt64
        var txDropped: UInt64
    }

    enum Role: String {
        /// testpmd's vhost PMD: a back-end.
        case vhost
        /// testpmd's virtio-user: a front-end.
        case virtioUser = "virtio-user"
    }

    let prefix: String
    let pidfile: String
    let log: String
    private var running = true
    static let script = repositoryRoot.appendingPathComponent("Scripts/testpmd.sh").path

    /// Starts testpmd and returns once it forwards (the script bounds the wait).
    init(_ role: Role, socket: String, _ options: [String] = []) throws {
        prefix = "vut\(UInt32.random(in: 0...UInt32.max))"
        pidfile = "/tmp/testpmd-\(prefix).pid"
        log = "/tmp/testpmd-\(prefix).log"
        let result = try runProgram(
            Self.script,
            [role.rawValue, "--socket", socket, "--prefix", prefix, "--pidfile", pidfile, "--log", log] + options)
        guard result.status == 0 else {
            // Never a skip: the interop tests must run wherever the suite runs.
            throw TestPMDError("Scripts/testpmd.sh \(role.rawValue) failed (\(result.status)): \(result.errors)")
        }
    }

    deinit {
        if running { _ = try? runProgram(Self.script, ["kill", "--pidfile", pidfile]) }
        try? FileManager.default.removeItem(atPath: log)
    }

    /// SIGINT: testpmd stops forwarding, prints its totals and exits.
    func stop() throws -> Totals {
        running = false
        try runProgram(Self.script, ["stop", "--pidfile", pidfile])
        return try Self.totals(in: String(contentsOfFile: log, encoding: .utf8))
    }

    /// SIGKILL, as a crash would.
    func kill() throws {
        running = false
        try runProgram(Self.script, ["kill", "--pidfile", pidfile])
    }

    /// The whole log, for failure messages.
    var output: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    static func totals(in log: String) throws -> Totals {
        guard let block = log.components(separatedBy: "Accumulated forward statistics for all ports").last,
              log.contains("Accumulated forward statistics for all ports") else {
            throw TestPMDError("testpmd printed no totals:\n\(log.suffix(2000))")
        }
        func value(_ name: String) throws -> UInt64 {
            guard let range = block.range(of: name + ":") else { throw TestPMDError("no \(name) in testpmd's totals") }
            let digits = block[range.upperBound...].drop(while: { $0 == " " }).prefix(while: \.isNumber)
            guard let number = UInt64(digits) else { throw TestPMDError("unreadable \(name) in testpmd's totals") }
            return number
        }
        return Totals(rxPackets: try value("RX-packets"), rxDropped: try value("RX-dropped"),
                      txPackets: try value("TX-packets"), txDropped: try value("TX-dropped"))
    }
}

struct TestPMDError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
