import Logging
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A library stays silent unless the app hands it a `Logger` (swift-log's guidance): the old
/// defaults went to swift-log's default handler, which prints info lines on stdout.
final class SilentByDefaultTests: XCTestCase {
    func testNothingIsLoggedUnlessALoggerIsGiven() throws {
        XCTAssertTrue(VirtioUserDevice.Configuration(socketPath: "/tmp/x.sock").logger.handler is SwiftLogNoOpLogHandler)
        XCTAssertTrue(VhostUserBackend.Configuration(socketPath: "/tmp/x.sock").logger.handler is SwiftLogNoOpLogHandler)
        XCTAssertTrue(VhostUserSwitch.Configuration(portPaths: ["/tmp/x.sock", "/tmp/y.sock"]).logger.handler is SwiftLogNoOpLogHandler)
    }

    /// A logger given is used: events reach it.
    func testALoggerGivenHearsTheEvents() throws {
        let logs = LogCapture()
        let backend = try startBackend(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.logger = logs.logger()
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        device.stop()
        XCTAssertEqual(logs.named("link up").count, 1)
        XCTAssertEqual(logs.named("link down").count, 1)
    }
}
