import Foundation
import VirtioCore
import VhostUser
import VirtioUser
import XCTest

/// The back-end in its own process (the container model without namespaces), and the CLI as a
/// user runs it.
final class SeparateProcessTests: XCTestCase {
    private func launch(_ executable: String, _ arguments: [String]) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = productsDirectory.appendingPathComponent(executable)
        process.arguments = arguments
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        return (process, output, errors)
    }

    private func text(_ pipe: Pipe) -> String {
        String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    func testDeviceAgainstBackendInAnotherProcess() throws {
        let path = try makeSocketPath(self)
        let (backend, output, _) = try launch("vhost-user-backend", ["--socket", path, "--mode", "loopback"])
        defer { if backend.isRunning { backend.terminate() } }
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.connectTimeoutMilliseconds = 10_000  // the process may take a moment to listen
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        let total: UInt64 = 50_000
        let result = runLoopbackStream(device: device, stream: FrameStream(seed: 0xBEEF), total: total)
        XCTAssertEqual(result.intact, total)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize)

        backend.terminate()  // SIGTERM: the back-end prints its totals and exits 0
        let printed = text(output)
        backend.waitUntilExit()
        XCTAssertEqual(backend.terminationStatus, 0, printed)
        XCTAssertTrue(printed.contains("received \(total)"), printed)
        XCTAssertTrue(printed.contains("sent \(total)"), printed)
        XCTAssertTrue(printed.contains("protocol errors 0"), printed)
    }

    /// The README's main job: a short loopback run reports TX = RX and exits 0.
    func testCommandLineLoopbackRunSucceeds() throws {
        let (pmd, output, errors) = try launch("virtio-user-pmd", ["--duration", "1", "--stats-period", "0"])
        let printed = text(output)
        pmd.waitUntilExit()
        XCTAssertEqual(pmd.terminationStatus, 0, printed + text(errors))
        XCTAssertTrue(printed.contains("result: OK, TX = RX"), printed)
    }

    /// Paused for 3 s in the middle of a run (SIGSTOP, as `docker pause` or a frozen cgroup
    /// does), then continued: the run finishes as if nothing happened. The old forwarder
    /// trapped (SIGILL) on `wake - now` once a stats period had been missed.
    func testAPausedRunLivesOn() throws {
        let (pmd, output, errors) = try launch("virtio-user-pmd", ["--duration", "4", "--stats-period", "0.5"])
        MonotonicClock.sleep(milliseconds: 1000)
        kill(pmd.processIdentifier, SIGSTOP)
        MonotonicClock.sleep(milliseconds: 3000)
        kill(pmd.processIdentifier, SIGCONT)
        let printed = text(output)
        pmd.waitUntilExit()
        XCTAssertEqual(pmd.terminationReason, .exit, "killed by signal \(pmd.terminationStatus): " + printed + text(errors))
        XCTAssertEqual(pmd.terminationStatus, 0, printed + text(errors))
        XCTAssertTrue(printed.contains("result: OK, TX = RX"), printed)
    }

    /// Durations and periods past what a clock can count are long waits, not traps: the old
    /// back-end and switch crashed at their first look at the clock.
    func testDaemonsTakeDurationsPastTheEndOfTime() throws {
        let path = try makeSocketPath(self)
        for (name, arguments) in [("vhost-user-backend", ["--socket", path]), ("vhost-user-switch", ["--port", path + "a", "--port", path + "b"])] {
            let (daemon, output, errors) = try launch(name, arguments + ["--duration", "1e30", "--stats-period", "1e30"])
            MonotonicClock.sleep(milliseconds: 500)
            XCTAssertTrue(daemon.isRunning, "\(name) died: " + text(errors))
            daemon.terminate()
            let printed = text(output)
            daemon.waitUntilExit()
            XCTAssertEqual(daemon.terminationReason, .exit, "\(name): " + printed)
            XCTAssertEqual(daemon.terminationStatus, 0, "\(name): " + printed)
        }
    }

    /// `--pcap FILE` with two queue pairs: one file per pair, and tshark reads as many frames
    /// from them as the run sent and received; `--log-level info` shows the link coming up.
    func testCommandLinePcapCaptureIsReadByTShark() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pmd-pcap-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("run.pcap").path
        let (pmd, output, errors) = try launch("virtio-user-pmd", [
            "--queues", "2", "--duration", "0.3", "--stats-period", "0", "--pcap", file, "--log-level", "info",
        ])
        let printed = text(output)
        let logged = text(errors)
        pmd.waitUntilExit()
        XCTAssertEqual(pmd.terminationStatus, 0, printed + logged)
        XCTAssertTrue(logged.contains("link up"), logged)
        func packets(_ label: String) -> Int {
            guard let line = printed.split(separator: "\n").first(where: { $0.contains("\(label) packets:") }),
                  let value = line.split(separator: " ").dropFirst(2).first, let number = Int(value) else { return -1 }
            return number
        }
        var captured = 0
        for (pair, path) in [(0, file), (1, directory.appendingPathComponent("run-1.pcap").path)] {
            XCTAssertTrue(printed.contains("capture: pair \(pair):"), printed)
            // tshark decodes the first thousand; capinfos (Wireshark's, installed with tshark)
            // counts them all without decoding, which is quicker for a few million.
            let read = try runProgram("/usr/bin/tshark", ["-r", path, "-c", "1000", "-T", "fields", "-e", "frame.len"])
            XCTAssertEqual(read.status, 0, read.errors)
            let lengths = read.output.split(separator: "\n")
            XCTAssertGreaterThan(lengths.count, 0, "pair \(pair) captured frames")
            XCTAssertTrue(lengths.allSatisfy { $0 == "64" }, "64-byte frames only")
            let count = try runProgram("/usr/bin/capinfos", ["-c", "-M", "-T", path])
            XCTAssertEqual(count.status, 0, count.errors)
            // "-T": a header line, then "path<TAB>count".
            captured += Int(count.output.split(separator: "\n").last?.split(separator: "\t").last ?? "") ?? -1
        }
        XCTAssertEqual(captured, packets("TX") + packets("RX"), printed)
    }

    /// `vhost-user-switch` between two `virtio-user-pmd` processes: A sends to B's MAC, B
    /// receives what the switch says it sent to B's port, and SIGTERM prints per-port totals.
    func testSwitchCommandForwardsBetweenTwoProcesses() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("switch-cli-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let portA = directory.appendingPathComponent("a.sock").path
        let portB = directory.appendingPathComponent("b.sock").path
        let (fabric, fabricOutput, fabricErrors) = try launch("vhost-user-switch", ["--port", portA, "--port", portB])
        defer { if fabric.isRunning { fabric.terminate() } }
        XCTAssertTrue(waitUntil { FileManager.default.fileExists(atPath: portA) && FileManager.default.fileExists(atPath: portB) })
        let (receiver, receiverOutput, _) = try launch("virtio-user-pmd", [
            "--socket", portB, "--forward-mode", "rxonly", "--mac", "02:00:00:00:00:0b", "--duration", "3", "--stats-period", "0",
        ])
        let (sender, senderOutput, _) = try launch("virtio-user-pmd", [
            "--socket", portA, "--peer-mac", "02:00:00:00:00:0b", "--duration", "1", "--stats-period", "0",
        ])
        let sent = text(senderOutput)
        sender.waitUntilExit()
        let received = text(receiverOutput)
        receiver.waitUntilExit()
        fabric.terminate()  // SIGTERM: per-port totals, exit 0
        let totals = text(fabricOutput)
        fabric.waitUntilExit()
        XCTAssertEqual(sender.terminationStatus, 0, sent)
        XCTAssertEqual(receiver.terminationStatus, 0, received)
        XCTAssertEqual(fabric.terminationStatus, 0, totals + text(fabricErrors))
        func number(after label: String, in text: String) -> UInt64? {
            guard let range = text.range(of: label) else { return nil }
            return UInt64(text[range.upperBound...].prefix(while: \.isNumber))
        }
        let intoSwitch = try XCTUnwrap(number(after: "port 0: received ", in: totals), totals)
        let toB = try XCTUnwrap(number(after: "sent ", in: String(totals[try XCTUnwrap(totals.range(of: "port 1:")).lowerBound...])), totals)
        // Frames still on A's ring when it stopped were never taken: A counts them as drops.
        let aSent = try XCTUnwrap(number(after: "TX packets: ", in: sent), sent)
        let aLost = try XCTUnwrap(number(after: "drops: TX ", in: sent), sent)
        XCTAssertEqual(aSent - aLost, intoSwitch, "every frame A's ring gave up entered the switch")
        XCTAssertLessThanOrEqual(aLost, 256, "at most a ring's worth was left behind")
        XCTAssertGreaterThan(toB, 0, totals)
        XCTAssertEqual(number(after: "RX packets: ", in: received), toB, "B received what the switch put on its ring")
    }

    /// Two queue pairs, a forwarding thread each: both carry frames, and all come back.
    func testCommandLineRunsTwoQueuePairs() throws {
        // A thread per pair, then one thread polling both.
        for threads in [[], ["--threads", "1"]] {
            let (pmd, output, errors) = try launch("virtio-user-pmd", ["--queues", "2", "--duration", "1", "--stats-period", "0"] + threads)
            let printed = text(output)
            pmd.waitUntilExit()
            XCTAssertEqual(pmd.terminationStatus, 0, printed + text(errors))
            XCTAssertTrue(printed.contains("2 queue pair(s)"), printed)
            XCTAssertTrue(printed.contains("features 0x") && printed.contains("MQ|"), printed)
            XCTAssertTrue(printed.contains("result: OK, TX = RX"), printed)
        }
    }

    /// Feature switches reach the negotiation, and interrupt-mode forwarding (--rx-wait)
    /// circulates frames like polling does.
    func testCommandLineFeatureSwitchesAndInterruptMode() throws {
        let (pmd, output, errors) = try launch("virtio-user-pmd", [
            "--forward-mode", "io", "--tx-first", "--rx-wait", "50", "--duration", "1", "--stats-period", "0",
            "--offloads", "csum,guest-csum", "--no-indirect", "--no-mergeable", "--in-order", "--event-idx",
        ])
        let printed = text(output)
        pmd.waitUntilExit()
        XCTAssertEqual(pmd.terminationStatus, 0, printed + text(errors))
        XCTAssertTrue(printed.contains("(CSUM|GUEST_CSUM|"), printed)
        XCTAssertFalse(printed.contains("INDIRECT_DESC") || printed.contains("MRG_RXBUF"), printed)
        XCTAssertTrue(printed.contains("EVENT_IDX") && printed.contains("IN_ORDER"), printed)
        XCTAssertTrue(printed.contains("result: OK, TX = RX"), printed)
    }

    func testCommandLineReportsAMissingBackendInOneLine() throws {
        let path = try makeSocketPath(self)
        let (pmd, _, errors) = try launch("virtio-user-pmd", ["--socket", path, "--connect-timeout", "100"])
        let message = text(errors)
        pmd.waitUntilExit()
        XCTAssertEqual(pmd.terminationStatus, 2)
        XCTAssertTrue(message.hasPrefix("virtio-user-pmd: error: connect(\(path)) failed"), message)
        XCTAssertEqual(message.split(separator: "\n").count, 1, message)
    }

    func testCommandLineRejectsBadArguments() throws {
        for arguments in [["--queue-size", "100"], ["--pkt-size", "10"], ["--burst", "0"], ["--forward-mode", "fly"], ["--queues", "0"], ["--queues", "1", "--cpu", "0", "--cpu", "1"], ["--queues", "2", "--threads", "3"],
                          ["--offloads", "bogus"], ["--rx-wait", "5", "--queues", "2", "--threads", "1"]] {
            let (pmd, _, errors) = try launch("virtio-user-pmd", arguments + ["--duration", "1"])
            let message = text(errors)
            pmd.waitUntilExit()
            XCTAssertEqual(pmd.terminationStatus, 64, "\(arguments): a bad option exits 64 (README): \(message)")
            XCTAssertFalse(message.isEmpty, "\(arguments)")
        }
        for arguments in [["--queues", "0"], ["--tap", "tap9"], ["--mode", "tap", "--tap", "a-name-far-too-long"]] {
            let (backend, _, errors) = try launch("vhost-user-backend", ["--socket", "/tmp/x.sock"] + arguments)
            let message = text(errors)
            backend.waitUntilExit()
            XCTAssertEqual(backend.terminationStatus, 64, "\(arguments): \(message)")
        }
        for arguments in [["--addresses-per-port", "0"], ["--address-ageing", "0"], ["--full-destination-wait", "0"], ["--socket-mode", "9x"]] {
            let (fabric, _, errors) = try launch("vhost-user-switch", ["--port", "/tmp/x.sock", "--port", "/tmp/y.sock"] + arguments)
            let message = text(errors)
            fabric.waitUntilExit()
            XCTAssertEqual(fabric.terminationStatus, 64, "\(arguments): \(message)")
        }
        for arguments in [["--ip", "192.0.2"], ["--ip", "192.0.2.2", "--mac", "nope"]] {
            let (responder, _, errors) = try launch("ping-responder", ["--socket", "/tmp/x.sock"] + arguments)
            let message = text(errors)
            responder.waitUntilExit()
            XCTAssertEqual(responder.terminationStatus, 64, "\(arguments): \(message)")
        }
    }

    /// A TAP that cannot be opened (here: the name of an interface that is not a TAP) is a
    /// one-line error saying why, with exit status 2.
    func testBackendExplainsATapItCannotOpen() throws {
        guard getuid() == 0 else { throw XCTSkip("as another user the error is EPERM, not the one checked here") }
        let (backend, _, errors) = try launch("vhost-user-backend", ["--socket", try makeSocketPath(self), "--mode", "tap", "--tap", "lo"])
        let message = text(errors)
        backend.waitUntilExit()
        XCTAssertEqual(backend.terminationStatus, 2, message)
        XCTAssertTrue(message.contains("Opening TAP 'lo' failed") && message.contains("exists and is not a TAP"), message)
    }

    /// `--json`: stdout is one JSON object and nothing else, with the summary's figures;
    /// `--progress` puts a self-rewriting line on stderr.
    func testCommandLineJSONSummaryAndProgressLine() throws {
        let (pmd, output, errors) = try launch("virtio-user-pmd", ["--duration", "1.5", "--json", "--progress"])
        let printed = text(output)
        let progress = text(errors)
        pmd.waitUntilExit()
        XCTAssertEqual(pmd.terminationStatus, 0, printed + progress)
        let object = try JSONSerialization.jsonObject(with: Data(printed.utf8)) as? [String: Any]
        let summary = try XCTUnwrap(object, printed)
        XCTAssertEqual(summary["result"] as? String, "ok")
        XCTAssertEqual(summary["mode"] as? String, "txonly")
        XCTAssertEqual(summary["link_at_end"] as? String, "up")
        let tx = try XCTUnwrap(summary["tx"] as? [String: Any])
        let rx = try XCTUnwrap(summary["rx"] as? [String: Any])
        let sent = try XCTUnwrap(tx["packets"] as? Int)
        XCTAssertGreaterThan(sent, 0)
        XCTAssertEqual(rx["packets"] as? Int, sent)
        XCTAssertGreaterThan(tx["mpps"] as? Double ?? 0, 0)
        let backend = try XCTUnwrap(summary["backend"] as? [String: Any])
        XCTAssertEqual(backend["sent"] as? Int, sent)
        XCTAssertTrue(progress.contains("\r  ["), "a progress line rewritten in place: \(progress.debugDescription)")
        XCTAssertTrue(progress.contains("Mpps"), progress)
        XCTAssertTrue(progress.hasSuffix("\n"), "the line is ended")
    }

    /// No root needed: as an unprivileged user (nobody), with normal pages, the loopback run
    /// works. Only meaningful when the tests run as root (CI does); as non-root they already
    /// prove it, so the plain run above covers it.
    func testRunsWithoutRootPrivileges() throws {
        guard getuid() == 0 else {
            let (pmd, output, _) = try launch("virtio-user-pmd", ["--duration", "1", "--stats-period", "0"])
            let printed = text(output)
            pmd.waitUntilExit()
            XCTAssertEqual(pmd.terminationStatus, 0, printed)
            return
        }
        let binary = productsDirectory.appendingPathComponent("virtio-user-pmd").path
        // Copy the binary where an unprivileged user can read and run it.
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vu-nobody-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let copy = directory.appendingPathComponent("virtio-user-pmd")
        try FileManager.default.copyItem(atPath: binary, toPath: copy.path)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy.path)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", copy.path, "--duration", "1", "--stats-period", "0"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let printed = text(output)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, printed)
        XCTAssertTrue(printed.contains("result: OK, TX = RX"), printed)
    }
}
