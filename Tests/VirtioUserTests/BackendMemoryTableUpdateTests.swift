import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// A front-end may send SET_MEM_TABLE again while its rings run (QEMU does on memory hotplug):
/// the back-end re-translates the rings and carries on from where they were, neither taking a
/// frame twice nor skipping one.
final class BackendMemoryTableUpdateTests: XCTestCase {
    func testRunningRingsCarryOnAfterANewMemoryTable() throws {
        let backend = try startBackend(self, mode: .loopback)
        let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
        try peer.startEverything()
        peer.writeValidFrame(descriptor: 0)
        peer.makeAvailable(ring: 1, heads: [0])
        XCTAssertTrue(waitUntil { backend.statistics.framesReceived == 1 })

        try peer.sendMemoryTable()
        _ = try peer.get(.getFeatures)  // the table was handled once this reply comes
        MonotonicClock.sleep(milliseconds: 100)
        XCTAssertEqual(backend.statistics.framesReceived, 1, "the first frame must not be taken again")

        peer.writeValidFrame(descriptor: 1)
        peer.makeAvailable(ring: 1, heads: [0, 1])
        XCTAssertTrue(waitUntil { backend.statistics.framesReceived == 2 })
        MonotonicClock.sleep(milliseconds: 100)
        XCTAssertEqual(backend.statistics.framesReceived, 2)
        XCTAssertEqual(backend.statistics.framesSent, 2)
        XCTAssertEqual(backend.statistics.protocolErrors, 0, backend.statistics.lastError.map { "\($0)" } ?? "")
    }
}
