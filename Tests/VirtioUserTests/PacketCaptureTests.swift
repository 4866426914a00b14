import Foundation
import VirtioCore
import VhostUser
import VirtioUser
import XCTest

/// pcap capture of a queue pair: tshark (Wireshark's reader) reads back every frame with its
/// bytes. Needs tshark (Debian package `tshark`; Scripts/test.sh installs it).
final class PacketCaptureTests: XCTestCase {
    /// The frames tshark reads from `path`, as byte arrays, in file order.
    private func framesReadByTShark(_ path: String) throws -> [[UInt8]] {
        // Only the frame layer: one hex block per frame, nothing decoded out of it.
        let result = try runProgram("/usr/bin/tshark", ["-r", path, "-x", "--disable-protocol", "ALL"])
        XCTAssertEqual(result.status, 0, result.errors)
        var frames: [[UInt8]] = []
        var current: [UInt8] = []
        for line in result.output.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty {
                if !current.isEmpty { frames.append(current) }
                current = []
                continue
            }
            // "0010  c7 40 be …   ascii": a 4-digit offset and two spaces, then 16 columns of
            // "xx " (the text after them may hold anything, so only those columns are read).
            let hex = line.dropFirst(6).prefix(48)
            for field in hex.split(separator: " ") {
                guard field.count == 2, let byte = UInt8(field, radix: 16) else { break }
                current.append(byte)
            }
        }
        if !current.isEmpty { frames.append(current) }
        return frames
    }

    private func expectedFrame(_ stream: FrameStream, _ sequence: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: stream.maximumLength)
        let length = bytes.withUnsafeMutableBytes { stream.write(sequence, to: $0.baseAddress!) }
        return Array(bytes.prefix(length))
    }

    /// 1,000 frames of 60…4,000 bytes (long ones spread over several buffers) through our
    /// loopback, captured one direction at a time and then both: tshark reads back the same
    /// number of frames, byte for byte.
    func testTSharkReadsBackEveryFrameWithTheSameBytes() throws {
        let backend = try startBackend(self)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        defer { device.stop() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("capture-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let stream = FrameStream(seed: 0xCA97, minimumLength: 60, maximumLength: 4000)
        let total: UInt64 = 1000

        for (name, directions) in [("tx", PacketCapture.Directions.transmit), ("rx", .receive), ("both", [.transmit, .receive])] {
            let path = directory.appendingPathComponent("\(name).pcap").path
            let capture = try PacketCapture(path: path, directions: directions)
            try device.startCapture(capture)
            XCTAssertThrowsError(try device.startCapture(PacketCapture(path: path + ".second")), "one capture per pair")
            XCTAssertEqual(runLoopbackStream(device: device, stream: stream, total: total).intact, total)
            XCTAssertTrue(device.stopCapture() === capture)
            try capture.close()
            let perDirection = name == "both" ? 2 : 1
            XCTAssertEqual(capture.framesWritten, total * UInt64(perDirection), name)

            let frames = try framesReadByTShark(path)
            XCTAssertEqual(frames.count, Int(total) * perDirection, "\(name): tshark reads every frame")
            if perDirection == 1 {
                var mismatched = 0
                for (sequence, frame) in frames.enumerated() where frame != expectedFrame(stream, UInt64(sequence)) { mismatched += 1 }
                XCTAssertEqual(mismatched, 0, "\(name): every frame's bytes as sent")
            } else {
                // Both directions interleave by burst; each frame appears once each way.
                let expected = (0..<total).map { expectedFrame(stream, $0) }
                XCTAssertEqual(Set(frames.map { $0.hashValue }).count, Set(expected.map { $0.hashValue }).count)
                XCTAssertEqual(frames.filter { $0.count > 1514 }.count, 2 * expected.filter { $0.count > 1514 }.count)
            }
        }
        XCTAssertNil(device.stopCapture(), "nothing attached any more")
        XCTAssertThrowsError(try device.startCapture(PacketCapture(path: directory.appendingPathComponent("x").path), queue: 3))
    }

    func testBadPathsAreClearErrors() {
        XCTAssertThrowsError(try PacketCapture(path: "/nonexistent-directory/f.pcap")) { error in
            guard case .system(let failure)? = error as? VirtioError else { return XCTFail("\(error)") }
            XCTAssertEqual(failure.operation, "open(/nonexistent-directory/f.pcap)")
            XCTAssertEqual(failure.errno, .noSuchFileOrDirectory)
        }
        XCTAssertThrowsError(try PacketCapture(path: "/tmp/x.pcap", snapLength: 10)) { error in
            XCTAssertEqual(error as? VirtioError, .configuration(InvalidSetting(field: "snapLength", value: "10", requirement: "64…262144 bytes")))
        }
    }
}
