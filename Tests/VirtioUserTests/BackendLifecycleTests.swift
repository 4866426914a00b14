import Foundation
import VirtioCore
import VhostUser
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
        // A socket file nobody serves, as a crashed process leaves it (its listener closed).
        do { _ = try UnixSocket.listen(at: path) }
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
            XCTAssertEqual(error as? VirtioError, .connection(.notASocket(path: filePath)))
        }
        XCTAssertEqual(try String(contentsOfFile: filePath, encoding: .utf8), "keep")
    }

    /// A back-end that is dropped leaves alone a socket another back-end has bound since.
    func testDroppingABackendNeverRemovesAnotherBackendsSocket() throws {
        let path = try makeSocketPath(self)
        var first: VhostUserBackend? = try VhostUserBackend(configuration: .init(socketPath: path))
        // A live socket is never replaced (SocketFileTests); an operator removed it by hand.
        XCTAssertEqual(unlink(path), 0)
        let second = try VhostUserBackend(configuration: .init(socketPath: path))
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

/// Requests the back-end does not implement are refused, not fatal.
final class BackendUnknownRequestTests: XCTestCase {
    /// An unknown request with NEED_REPLY gets a failure ack; the session goes on and the next
    /// request is answered; the connection ends without a protocol error.
    func testUnknownRequestIsRefusedAndTheSessionContinues() throws {
        let backend = try startBackend(self)
        do {
            let channel = VhostUserChannel(socket: try UnixSocket.connect(to: backend.configuration.socketPath, retry: .init(timeoutMilliseconds: 5000)))
            try channel.send(request: VhostUserRequest(rawValue: 99), flags: VhostUserHeader.needReplyFlag, payload: [])
            let refusal = try channel.receive(timeoutMilliseconds: 5000)
            XCTAssertEqual(refusal.header.request.rawValue, 99)
            XCTAssertTrue(refusal.header.isReply)
            XCTAssertEqual(refusal.payload, [1, 0, 0, 0, 0, 0, 0, 0], "a non-zero REPLY_ACK status means refused")

            try channel.send(.getFeatures)
            let features = try channel.receive(timeoutMilliseconds: 5000)
            XCTAssertEqual(features.header.request, .getFeatures)
            XCTAssertEqual(features.payload.count, 8)
            XCTAssertEqual(features.payload[4] & 1, 1, "VERSION_1 (bit 32) is offered")
        }  // the channel closes here
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        XCTAssertEqual(backend.requestTraces.first, ["request 99", "GET_FEATURES"])
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
    }
}
