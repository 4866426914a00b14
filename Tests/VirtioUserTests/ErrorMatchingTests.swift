import VhostUserBackend
import VirtioUser
import XCTest

/// The matching the "Handling errors" article shows, written as an app would, with only the public
/// modules imported: each failure lands in the clause for its case.
final class ErrorMatchingTests: XCTestCase {
    private enum Outcome: Equatable { case nobodyListens, fewerPairs(Int), other(VirtioError), started }

    private func start(_ device: VirtioUserDevice) -> Outcome {
        do {
            try device.start()
            return .started
        } catch .connection(.unreachable(_, .connectionRefused)),
                .connection(.unreachable(_, .noSuchFileOrDirectory)) {
            return .nobodyListens
        } catch .negotiation(.queuePairs(let offered, _)) {
            return .fewerPairs(offered)
        } catch {
            return .other(error)
        }
    }

    func testEachFailureLandsInTheClauseForItsCase() throws {
        var configuration = VirtioUserDevice.Configuration(socketPath: try makeSocketPath(self))
        configuration.connectTimeoutMilliseconds = 0
        XCTAssertEqual(start(try VirtioUserDevice(configuration: configuration)), .nobodyListens)

        let backend = try startBackend(self) { $0.queuePairs = 2 }
        configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.queuePairs = 3
        let device = try VirtioUserDevice(configuration: configuration)
        XCTAssertEqual(start(device), .fewerPairs(2))
        if case .down(.failed(.negotiation(.queuePairs(2, 3)))) = device.linkState {} else {
            XCTFail("the link should say why it is down: \(device.linkState)")
        }

        configuration.queuePairs = 2
        let fitting = try VirtioUserDevice(configuration: configuration)
        XCTAssertEqual(start(fitting), .started)
        XCTAssertEqual(start(fitting), .other(.state(.alreadyRunning("The device"))))
        fitting.stop()
    }
}
