import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// A Linux guest on QEMU (Scripts/qemu-guest.sh) whose virtio-net is served over vhost-user at
/// `socket`: the guest's /init brings eth0 up and runs `scenario`, a busybox shell script,
/// then powers off. Its console is collected as it comes, so a test can act on a line the
/// scenario prints ("GUEST: …") while the guest still runs.
final class QEMUGuest: Sendable {
    private let process: Locked<Process>
    private let consoleText = Locked("")
    private let finished = Locked(false)

    /// The guest's MAC, as the scenarios expect it.
    static let mac = "52:54:00:12:34:56"

    /// Boots the guest (building its image first if needed). `netOptions` are extra
    /// virtio-net-pci properties (`packed=on,…`); `queues` > 1 turns on multiqueue.
    init(
        _ testCase: XCTestCase, socket: String, scenario: String, netOptions: String? = nil,
        queues: Int = 1, reconnectSeconds: Int? = nil, timeoutSeconds: Int = 240
    ) throws {
        let directory = URL(fileURLWithPath: try makeSocketPath(testCase, name: "guest")).deletingLastPathComponent()
        let scenarioFile = directory.appendingPathComponent("scenario.sh")
        try scenario.write(to: scenarioFile, atomically: true, encoding: .utf8)
        var arguments = ["run", "--socket", socket, "--scenario", scenarioFile.path, "--mac", Self.mac,
                         "--queues", "\(queues)", "--timeout", "\(timeoutSeconds)"]
        if let netOptions { arguments += ["--net-options", netOptions] }
        if let reconnectSeconds { arguments += ["--reconnect", "\(reconnectSeconds)"] }
        let process = Process()
        process.executableURL = repositoryRoot.appendingPathComponent("Scripts/qemu-guest.sh")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        self.process = Locked(process)
        let handle = pipe.fileHandleForReading
        let consoleText = self.consoleText
        let finished = self.finished
        // QEMU's console and its warnings, until it exits (the pipe's end).
        Thread.detachNewThread {
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                consoleText.withLock { $0 += String(decoding: data, as: UTF8.self) }
            }
            finished.withLock { $0 = true }
        }
        testCase.addTeardownBlock { [self] in
            self.process.withLock { if $0.isRunning { $0.terminate() } }
        }
    }

    /// Everything QEMU and the guest printed so far.
    var console: String { consoleText.withLock { $0 } }

    /// Waits until the console shows `text` (true) or `seconds` pass (false).
    func waitFor(_ text: String, seconds: Double = 120) -> Bool {
        waitUntil(seconds: seconds) { console.contains(text) }
    }

    /// Waits for the guest to power off; returns the scenario's exit status (nil if the guest
    /// never reported one, e.g. it did not boot or QEMU failed).
    @discardableResult
    func waitForExit(seconds: Double = 240) -> Int? {
        _ = waitUntil(seconds: seconds) { finished.withLock { $0 } }
        process.withLock { $0.waitUntilExit() }
        return value("scenario exit")
    }

    /// What the scenario printed as "GUEST: name TEXT" (the last one).
    func field(_ name: String) -> String? {
        let prefix = "GUEST: \(name) "
        return console.split(whereSeparator: \.isNewline).reversed()
            .first { $0.hasPrefix(prefix) }
            .map { $0.dropFirst(prefix.count).trimmingCharacters(in: .whitespaces) }
    }

    /// The number the scenario printed as "GUEST: name N" (the last one).
    func value(_ name: String) -> Int? {
        field(name).flatMap { Int($0) }
    }

    /// The features the guest's driver negotiated, if the scenario printed them
    /// (``GuestScript/features``).
    var features: VirtioFeatures? {
        guard let bits = field("features") else { return nil }
        var raw: UInt64 = 0
        for (bit, character) in bits.prefix(64).enumerated() where character == "1" { raw |= 1 << UInt64(bit) }
        return VirtioFeatures(rawValue: raw)
    }

    /// QEMU's own messages (warnings and errors), which it prefixes with its name.
    var qemuMessages: [String] {
        console.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("qemu-system-x86_64:") }.map(String.init)
    }

    /// Lines of busybox ping's summary: "N packets transmitted, M packets received".
    var pingSummaries: [(transmitted: Int, received: Int)] {
        console.split(whereSeparator: \.isNewline).compactMap { line in
            let words = line.split(separator: " ")
            guard words.count >= 6, words[1] == "packets", words[2] == "transmitted,", words[4] == "packets",
                  let sent = Int(words[0]), let received = Int(words[3]) else { return nil }
            return (sent, received)
        }
    }
}

/// Scenario lines that give the guest 192.0.2.10/24 on eth0 (TEST-NET-1: nothing leaves the
/// test) and print its counters, for scenarios to build on.
enum GuestScript {
    static let up = """
        ip addr add 192.0.2.10/24 dev eth0
        ip link set eth0 up
        """

    /// Prints eth0's packet and byte counters as "GUEST: tx_packets N" and so on.
    static let counters = """
        for c in tx_packets rx_packets tx_bytes rx_bytes rx_dropped rx_errors tx_errors; do
          echo "GUEST: $c $(cat /sys/class/net/eth0/statistics/$c)"
        done
        """

    /// Prints the features the guest's driver negotiated as "GUEST: features 0101…" (bit 0 first).
    static let features = #"echo "GUEST: features $(cat /sys/class/net/eth0/device/features)""#

    /// Waits (up to `seconds`) until `address` answers one ping.
    static func waitForPing(_ address: String, seconds: Int = 60) -> String {
        """
        i=0
        until ping -c 1 -W 1 \(address) >/dev/null 2>&1; do
          i=$((i + 1)); [ $i -ge \(seconds) ] && break
        done
        """
    }
}
