#if canImport(Glibc)
import Glibc
#endif
import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// The listening socket file: never taken from a process that still listens on it (a stale one
/// is replaced: `BackendLifecycleTests`), and given the mode and group an operator asks for.
final class SocketFileTests: XCTestCase {
    /// A second back-end on the path of a live one is refused, and the first goes on serving.
    func testALiveListenerIsNeverReplaced() throws {
        let first = try startBackend(self)
        let path = first.configuration.socketPath
        XCTAssertThrowsError(try VhostUserBackend(configuration: .init(socketPath: path))) { error in
            XCTAssertEqual(error as? VirtioError, .connection(.socketInUse(path: path, detail: "is a live socket: another process listens on it")))
        }
        let (status, _, errors) = try runProgram(productsDirectory.appendingPathComponent("vhost-user-backend").path, ["--socket", path, "--duration", "1"])
        XCTAssertEqual(status, 2, errors)
        XCTAssertTrue(errors.contains("is a live socket: another process listens on it"), errors)
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        defer { device.stop() }
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 3), total: 1000).intact, 1000)
    }

    /// --socket-mode and --socket-group (as an operator gives a container's group access).
    func testSocketModeAndGroupAreSet() throws {
        guard getuid() == 0 else { throw XCTSkip("giving a file to another group needs root; CI runs as root") }
        let backend = try startBackend(self) { $0.socketAccess = SocketFileAccess(mode: 0o660, group: "65534") }
        var info = stat()
        XCTAssertEqual(lstat(backend.configuration.socketPath, &info), 0)
        XCTAssertEqual(info.st_mode & 0o7777, 0o660)
        XCTAssertEqual(info.st_gid, 65534)
        XCTAssertEqual(info.st_mode & S_IFMT, S_IFSOCK)

        let path = try makeSocketPath(self, name: "cli.sock")
        let binary = productsDirectory.appendingPathComponent("vhost-user-backend").path
        let (status, output, errors) = try runProgram(binary, ["--socket", path, "--socket-mode", "640", "--socket-group", "65534", "--duration", "0.5"])
        XCTAssertEqual(status, 0, errors)
        XCTAssertTrue(output.contains("listening on"), output)
    }

    /// A device in server mode (a container's app, where userspace CNI has the host's switch
    /// connect) sets its socket's mode and group too.
    func testAListeningDeviceSetsItsSocketsModeAndGroup() throws {
        guard getuid() == 0 else { throw XCTSkip("giving a file to another group needs root; CI runs as root") }
        var configuration = VirtioUserDevice.Configuration(socketPath: try makeSocketPath(self))
        configuration.connectionMode = .server
        configuration.socketAccess = SocketFileAccess(mode: 0o660, group: "65534")
        let device = try VirtioUserDevice(configuration: configuration)
        let starting = try DedicatedThread(name: "start") { try? device.start() }
        XCTAssertTrue(waitUntil { FileManager.default.fileExists(atPath: configuration.socketPath) })
        var info = stat()
        XCTAssertEqual(lstat(configuration.socketPath, &info), 0)
        XCTAssertEqual(info.st_mode & 0o7777, 0o660)
        XCTAssertEqual(info.st_gid, 65534)
        let backend = try startBackend(self) {
            $0.socketPath = configuration.socketPath
            $0.connectionMode = .client
        }
        starting.join()
        XCTAssertEqual(device.linkState, .up)
        device.stop()
        withExtendedLifetime(backend) {}

        var client = VirtioUserDevice.Configuration(socketPath: configuration.socketPath)
        client.socketAccess = SocketFileAccess(mode: 0o660)
        XCTAssertThrowsError(try VirtioUserDevice(configuration: client).start(), "mode and group are for the socket we listen on")
    }

    /// The switch sets every port's socket the same way (`--socket-mode`, `--socket-group`).
    func testSwitchPortSocketsGetTheirModeAndGroup() throws {
        guard getuid() == 0 else { throw XCTSkip("giving a file to another group needs root; CI runs as root") }
        let paths = try (0..<2).map { try makeSocketPath(self, name: "port\($0).sock") }
        var configuration = VhostUserSwitch.Configuration(portPaths: paths)
        configuration.socketAccess = SocketFileAccess(mode: 0o660, group: "65534")
        let fabric = try VhostUserSwitch(configuration: configuration)
        defer { fabric.stop() }
        for path in paths {
            var info = stat()
            XCTAssertEqual(lstat(path, &info), 0)
            XCTAssertEqual(info.st_mode & 0o7777, 0o660, path)
            XCTAssertEqual(info.st_gid, 65534, path)
        }

        let cliPaths = try (0..<2).map { try makeSocketPath(self, name: "cli\($0).sock") }
        let binary = productsDirectory.appendingPathComponent("vhost-user-switch").path
        let (status, output, errors) = try runProgram(binary, [
            "--port", cliPaths[0], "--port", cliPaths[1], "--socket-mode", "640", "--socket-group", "65534", "--duration", "0.5",
        ])
        XCTAssertEqual(status, 0, errors)
        XCTAssertTrue(output.contains("2 ports"), output)
    }

    func testBadSocketModeOrGroupIsAClearError() throws {
        XCTAssertThrowsError(try VhostUserBackend(configuration: {
            var configuration = VhostUserBackend.Configuration(socketPath: try! makeSocketPath(self))
            configuration.socketAccess = SocketFileAccess(group: "no-such-group-here")
            return configuration
        }())) { error in
            guard case .configuration(let setting)? = error as? VirtioError else { return XCTFail("\(error)") }
            XCTAssertEqual(setting.field, "group")
            XCTAssertEqual(setting.value, "no-such-group-here")
        }
        let binary = productsDirectory.appendingPathComponent("vhost-user-backend").path
        let path = try makeSocketPath(self)
        let (status, _, errors) = try runProgram(binary, ["--socket", path, "--socket-mode", "99"])
        XCTAssertEqual(status, 64, errors)
        XCTAssertTrue(errors.contains("is not octal permission bits"), errors)
        let (clientStatus, _, clientErrors) = try runProgram(binary, ["--socket", path, "--client", "--socket-mode", "660"])
        XCTAssertEqual(clientStatus, 64, clientErrors)
    }
}
