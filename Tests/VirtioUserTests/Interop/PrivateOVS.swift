import Foundation
import VirtioCore
import XCTest

/// An Open vSwitch with DPDK of the test's own (Scripts/ovs.sh): database, ovsdb-server and
/// ovs-vswitchd in a fresh directory, never the system's; stopped when the test ends.
final class PrivateOVS {
    static let script = repositoryRoot.appendingPathComponent("Scripts/ovs.sh").path
    let directory: String
    /// Where the devices put their sockets: owned by the unprivileged user they run as.
    let socketDirectory: String

    init(_ testCase: XCTestCase) throws {
        directory = "/tmp/ovs-\(UUID().uuidString.prefix(8))"
        socketDirectory = directory + "/sockets"
        let result = try runSpawned(Self.script, ["start", directory])
        guard result.status == 0 else {
            // Never a skip: the OVS tests run wherever the suite runs.
            throw TestFailure("Scripts/ovs.sh start failed (\(result.status)): \(result.errors)")
        }
        try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        guard chown(socketDirectory, ContainerDevice.user, ContainerDevice.user) == 0 else {
            throw TestFailure("chown \(socketDirectory): errno \(errno)")
        }
        let directory = directory
        testCase.addTeardownBlock {
            _ = try? runSpawned(Self.script, ["stop", directory])
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    @discardableResult
    func run(_ tool: String, _ arguments: [String]) throws -> String {
        let result = try runSpawned(Self.script, [tool, directory] + arguments)
        guard result.status == 0 else {
            throw TestFailure("ovs \(tool) \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.errors)\n\(logTail())")
        }
        return result.output
    }

    @discardableResult
    func vsctl(_ arguments: String...) throws -> String { try run("vsctl", arguments) }

    /// A netdev (userspace datapath) bridge in secure fail mode, so with no flows (not even
    /// after ovs-vswitchd restarts): it drops everything until
    /// ``crossConnect(_:_:_:)`` (NORMAL would also flood to the bridge's own port, and frames
    /// would escape the count).
    func addBridge(_ bridge: String) throws {
        try vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev", "fail_mode=secure")
        try run("ofctl", ["del-flows", bridge])
    }

    /// A `dpdkvhostuserclient` port numbered `number`: OVS connects to the device listening at
    /// `socket`.
    func addVhostPort(_ bridge: String, _ name: String, number: Int, socket: String, _ options: [String] = []) throws {
        try run("vsctl", ["add-port", bridge, name, "--", "set", "Interface", name, "type=dpdkvhostuserclient",
                          "ofport_request=\(number)", "options:vhost-server-path=\(socket)"] + options)
    }

    /// Ports `a` and `b` (by number) forward to each other, and nothing else goes anywhere.
    func crossConnect(_ bridge: String, _ a: Int, _ b: Int) throws {
        try run("ofctl", ["del-flows", bridge])
        try run("ofctl", ["add-flow", bridge, "in_port=\(a),actions=output:\(b)"])
        try run("ofctl", ["add-flow", bridge, "in_port=\(b),actions=output:\(a)"])
    }

    /// Frames OVS took in on port `number` and matched to its flow: what it received from that
    /// device. Flow counters outlive the device's connection (interface counters do not).
    func receivedFrames(_ bridge: String, inPort number: Int) throws -> UInt64 {
        let text = try run("ofctl", ["dump-flows", bridge, "in_port=\(number)"])
        guard let range = text.range(of: "n_packets=") else { return 0 }
        return UInt64(text[range.upperBound...].prefix(while: \.isNumber)) ?? 0
    }

    /// Frames the datapath dropped before any flow or port counted them (OVS's coverage
    /// counters `datapath_drop_*`: upcall errors while a flow is being set up, and the like).
    func datapathDrops() throws -> UInt64 {
        let text = try run("appctl", ["coverage/show"])
        var total: UInt64 = 0
        for line in text.split(separator: "\n") where line.hasPrefix("datapath_drop_") {
            if let range = line.range(of: "total: ") { total += UInt64(line[range.upperBound...].prefix(while: \.isNumber)) ?? 0 }
        }
        return total
    }

    /// The interface's live counters from the datapath (only while its front-end is
    /// connected): frames OVS put on its ring, and frames it dropped for want of room there.
    func transmitCounters(_ interface: String) throws -> (sent: UInt64, dropped: UInt64) {
        let text = try run("appctl", ["dpctl/show", "-s"])
        let lines = text.split(separator: "\n").map(String.init)
        guard let start = lines.firstIndex(where: { $0.contains(": \(interface) (") }),
              let line = lines[start...].dropFirst().first(where: { $0.contains("TX packets:") }) else {
            throw TestFailure("no counters for \(interface) in dpctl/show: \(text)")
        }
        func field(_ name: String) -> UInt64 {
            guard let range = line.range(of: name + ":") else { return 0 }
            return UInt64(line[range.upperBound...].prefix(while: \.isNumber)) ?? 0
        }
        return (field("TX packets"), field("dropped"))
    }

    /// Whether OVS has enabled both queues of the port whose front-end listens at `socket`
    /// (the log says so; until then frames sent to the port are dropped outside its counters).
    func isReady(socket: String) -> Bool {
        let log = (try? String(contentsOfFile: directory + "/ovs-vswitchd.log", encoding: .utf8)) ?? ""
        return log.components(separatedBy: "of vhost device '\(socket)' changed to 'enabled'").count - 1 >= 2
    }

    func killSwitch() throws { try run("kill", []) }
    func restartSwitch() throws { try run("restart", []) }

    func logTail() -> String {
        let log = (try? String(contentsOfFile: directory + "/ovs-vswitchd.log", encoding: .utf8)) ?? ""
        return "ovs-vswitchd.log:\n" + log.split(separator: "\n").suffix(25).joined(separator: "\n")
    }
}

/// virtio-user-pmd "in a container", as userspace CNI wires one: its own network namespace,
/// an unprivileged user, and a socket it listens on for the host's switch (`--server`).
final class ContainerDevice {
    static let user: UInt32 = 65534
    let process: SpawnedProcess

    init(_ name: String, in directory: String, _ arguments: [String]) throws {
        process = try SpawnedProcess("/usr/bin/unshare", [
            "--net", "--ipc", "--uts", "--",
            "setpriv", "--reuid=\(Self.user)", "--regid=\(Self.user)", "--clear-groups",
            productsDirectory.appendingPathComponent("virtio-user-pmd").path, "--json",
        ] + arguments, output: directory + "/\(name).out", errors: directory + "/\(name).err")
    }

    /// Waits for the run to end (SIGINT after `seconds`: the summary still comes); its JSON summary.
    func finish(within seconds: Double = 60) throws -> PMDSummary {
        var status = process.wait(seconds: seconds)
        if status == nil {
            process.signal(SIGINT)
            status = process.wait(seconds: 10)
        }
        let text = process.output
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("{") }),
              var summary = try? JSONDecoder.snakeCase.decode(PMDSummary.self, from: Data(line.utf8)) else {
            throw TestFailure("virtio-user-pmd (exit \(status.map(String.init) ?? "none")) printed no summary: \(text) \(process.errors)")
        }
        summary.status = status ?? -1
        summary.stderr = process.errors
        return summary
    }
}

/// What `virtio-user-pmd --json` prints (the fields these tests read).
struct PMDSummary: Decodable {
    struct Direction: Decodable {
        var packets: UInt64
        var drops: UInt64
        var errors: UInt64
    }
    struct Verify: Decodable {
        var intact: UInt64
        var corrupt: UInt64
    }
    var features: String
    var tx: Direction
    var rx: Direction
    var sessions: Int
    var linkAtEnd: String
    var verify: Verify?
    var status: Int32 = 0
    var stderr = ""

    enum CodingKeys: String, CodingKey {
        case features, tx, rx, sessions, linkAtEnd, verify
    }
}

extension JSONDecoder {
    static var snakeCase: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
