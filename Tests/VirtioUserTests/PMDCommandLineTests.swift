import Foundation
import VirtioCore
import XCTest

/// `virtio-user-pmd` as users run it in containers: `--verify`, jumbo frames from txonly,
/// sockets given by a Kubernetes device-info file, abstract and long socket paths.
final class PMDCommandLineTests: XCTestCase {
    private func pmd(_ arguments: [String]) throws -> PMDSummary {
        let result = try runProgram(productsDirectory.appendingPathComponent("virtio-user-pmd").path, ["--json", "--stats-period", "0"] + arguments)
        guard var summary = try? JSONDecoder.snakeCase.decode(PMDSummary.self, from: Data(result.output.utf8)) else {
            throw TestFailure("no summary (exit \(result.status)): \(result.output) \(result.errors)")
        }
        summary.status = result.status
        summary.stderr = result.errors
        return summary
    }

    private func launch(_ product: String, _ arguments: [String]) throws -> Process {
        let process = try launchProduct(product, arguments)
        addTeardownBlock { if process.isRunning { process.terminate() }; process.waitUntilExit() }
        return process
    }

    /// Through the embedded loopback every frame comes back intact, counted one by one — with
    /// split and packed rings, and with 9000-byte frames sent as chains and received merged.
    func testVerifyChecksEveryFrameThatComesBack() throws {
        for extra in [[], ["--packed"], ["--pkt-size", "9000"], ["--pkt-size", "9000", "--packed", "--no-indirect"]] {
            let summary = try pmd(["--verify", "--duration", "0.5"] + extra)
            XCTAssertEqual(summary.status, 0, "\(extra): \(summary.stderr)")
            XCTAssertGreaterThan(summary.rx.packets, 0, "\(extra)")
            XCTAssertEqual(summary.verify?.intact, summary.rx.packets, "\(extra)")
            XCTAssertEqual(summary.verify?.corrupt, 0, "\(extra)")
            XCTAssertEqual(summary.tx.errors + summary.rx.errors, 0, "\(extra)")
        }
    }

    /// Through our switch: frames A stamps arrive intact at B; frames A does not stamp are
    /// found corrupt, and B's exit status says so.
    func testVerifyFindsFramesThatAreNotWhatWasSent() throws {
        let a = try makeSocketPath(self, name: "a.sock"), b = try makeSocketPath(self, name: "b.sock")
        _ = try launch("vhost-user-switch", ["--port", a, "--port", b])
        XCTAssertTrue(waitUntil { FileManager.default.fileExists(atPath: a) && FileManager.default.fileExists(atPath: b) })
        for stamped in [true, false] {
            let receiver = Process()
            receiver.executableURL = productsDirectory.appendingPathComponent("virtio-user-pmd")
            let output = Pipe()
            receiver.standardOutput = output
            receiver.standardError = FileHandle.nullDevice
            receiver.arguments = ["--socket", b, "--forward-mode", "rxonly", "--verify", "--json", "--duration", "2.5", "--mac", "02:00:00:00:00:0b"]
            try receiver.run()
            let sender = try pmd(["--socket", a, "--peer-mac", "02:00:00:00:00:0b", "--duration", "1"] + (stamped ? ["--verify"] : []))
            XCTAssertEqual(sender.status, 0, sender.stderr)
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            receiver.waitUntilExit()
            let summary = try JSONDecoder.snakeCase.decode(PMDSummary.self, from: Data(text.utf8))
            XCTAssertGreaterThan(summary.rx.packets, 0)
            if stamped {
                XCTAssertEqual(receiver.terminationStatus, 0, text)
                XCTAssertEqual(summary.verify?.intact, summary.rx.packets, text)
                XCTAssertEqual(summary.verify?.corrupt, 0, text)
            } else {
                XCTAssertEqual(receiver.terminationStatus, 1, "a corrupt frame makes the exit status 1: \(text)")
                XCTAssertEqual(summary.verify?.corrupt, summary.rx.packets, "no frame carries the pattern: \(text)")
            }
        }
    }

    /// A device-info file says where the socket is and who listens: "client", the back-end
    /// listens; "server", we do (and the back-end connects).
    func testDeviceInfoFileGivesTheSocketAndTheRole() throws {
        let socket = try makeSocketPath(self)
        let info = try makeSocketPath(self, name: "net1-device.json")
        for mode in ["client", "server"] {
            try #"{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"\#(mode)","path":"\#(socket)"}}"#
                .write(toFile: info, atomically: true, encoding: .utf8)
            // The back-end takes the other role.
            let backend = try launch("vhost-user-backend", ["--socket", socket, "--mode", "loopback"] + (mode == "server" ? ["--client"] : []))
            let summary = try pmd(["--device-info", info, "--duration", "0.5", "--connect-timeout", "10000"])
            XCTAssertEqual(summary.status, 0, "\(mode): \(summary.stderr)")
            XCTAssertGreaterThan(summary.rx.packets, 0, mode)
            XCTAssertEqual(summary.rx.packets, summary.tx.packets, mode)
            backend.terminate()
            backend.waitUntilExit()
        }
        try "{}".write(toFile: info, atomically: true, encoding: .utf8)
        let result = try runProgram(productsDirectory.appendingPathComponent("virtio-user-pmd").path, ["--device-info", info])
        XCTAssertEqual(result.status, 2)
        XCTAssertTrue(result.errors.hasPrefix("virtio-user-pmd: error: device-info file \(info)"), result.errors)
    }

    /// `@name` (the abstract namespace) and a path past sun_path's 107 bytes, both ways.
    func testAbstractAndLongSocketPaths() throws {
        let directory = try makeSocketPath(self, name: String(repeating: "d", count: 100))
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let long = directory + "/vhost.sock"
        for path in ["@vut-\(getpid())-\(UInt32.random(in: 0...UInt32.max))", long] {
            let backend = try launch("vhost-user-backend", ["--socket", path, "--mode", "loopback"])
            let summary = try pmd(["--socket", path, "--duration", "0.5", "--connect-timeout", "10000"])
            XCTAssertEqual(summary.status, 0, "\(path): \(summary.stderr)")
            XCTAssertEqual(summary.rx.packets, summary.tx.packets, path)
            XCTAssertGreaterThan(summary.rx.packets, 0, path)
            backend.terminate()
            backend.waitUntilExit()
        }
    }

    func testContainerOptionsThatDoNotFitAreRefused() throws {
        for arguments in [["--socket-mode", "660"], ["--socket", "/tmp/x", "--socket-group", "0"], ["--device-info", "/x", "--socket", "/y"],
                          ["--device-info", "/x", "--server"], ["--interface", "net1"], ["--pkt-size", "9000", "--burst", "4"],
                          ["--pkt-size", "65536"], ["--server", "--socket", "/tmp/x", "--socket-mode", "9"]] {
            let result = try runProgram(productsDirectory.appendingPathComponent("virtio-user-pmd").path, arguments + ["--duration", "1"])
            XCTAssertEqual(result.status, 64, "\(arguments): \(result.errors)")
            XCTAssertFalse(result.errors.isEmpty, "\(arguments)")
        }
    }
}
