import Foundation
import VhostUserBackend
import VirtioUser
import XCTest

/// The back-end's own lifecycle: socket handling, restart, serving one front-end after another.
final class BackendLifecycleTests: XCTestCase {
    /// Dropping a serving back-end stops its thread and removes its socket file.
    func testDroppingTheBackendStopsItAndRemovesTheSocket() throws {
        let path = try makeSocketPath(self)
        do {
            let backend = try VhostUserBackend(configuration: .init(socketPath: path))
            try backend.start()
            XCTAssertTrue(FileManager.default.fileExists(atPath: path))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }

    /// A stale socket left by a dead process is replaced; a regular file is never deleted.
    func testStaleSocketIsReplacedButOtherFilesAreRefused() throws {
        let path = try makeSocketPath(self)
        // A socket file nobody serves, as a crashed process leaves it.
        let stale = try UnixSocket.listen(at: path)
        _ = stale
        let backend = try VhostUserBackend(configuration: .init(socketPath: path))
        try backend.start()
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 3), total: 500).intact, 500)
        device.stop()
        backend.stop()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))

        let filePath = try makeSocketPath(self, name: "plain-file")
        XCTAssertTrue(FileManager.default.createFile(atPath: filePath, contents: Data("keep".utf8)))
        XCTAssertThrowsError(try VhostUserBackend(configuration: .init(socketPath: filePath))) { error in
            XCTAssertEqual((error as? VirtioError)?.kind, .invalidArgument)
        }
        XCTAssertEqual(try String(contentsOfFile: filePath, encoding: .utf8), "keep")
    }

    /// A back-end that is dropped leaves alone a socket another back-end has bound since.
    func testDroppingABackendNeverRemovesAnotherBackendsSocket() throws {
        let path = try makeSocketPath(self)
        var first: VhostUserBackend? = try VhostUserBackend(configuration: .init(socketPath: path))
        let second = try VhostUserBackend(configuration: .init(socketPath: path))  // replaces the file
        try second.start()
        withExtendedLifetime(first) {}
        first = nil
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(device.linkState, .up)
        device.stop()
        second.stop()
    }

    /// One back-end serves front-ends one after another, each from a fresh state.
    func testServesSuccessiveFrontends() throws {
        let backend = try startBackend(self)
        let path = backend.configuration.socketPath
        for round in 0..<5 {
            var configuration = VirtioUserDevice.Configuration(socketPath: path)
            configuration.queueSize = 64 << round
            let device = try VirtioUserDevice(configuration: configuration)
            try device.start()
            XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: UInt64(round)), total: 2000).intact, 2000)
            device.stop()
        }
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 5 })
        XCTAssertEqual(backend.statistics.connections, 5)
        XCTAssertEqual(backend.statistics.framesSent, 10_000)
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
    }
}
