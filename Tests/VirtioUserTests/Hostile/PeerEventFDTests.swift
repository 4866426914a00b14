#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// Kick and call fds a front-end has turned against us. O_NONBLOCK belongs to the open file,
/// which the front-end shares: it can clear the flag, empty a kick fd or fill a call fd's
/// counter. None of that may put the back-end's thread to sleep.
final class PeerEventFDTests: XCTestCase {
    /// A call fd made blocking with its counter at the maximum: a plain write(2) of 1 sleeps
    /// until the front-end reads, which a hostile one never does.
    func testCallFdsMadeBlockingAndFullNeverStallTheBackEnd() throws {
        let backend = try startBackend(self)
        let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
        try peer.startEverything()
        for call in peer.calls.values { try makeBlocking(call, count: 0xFFFF_FFFF_FFFF_FFFE) }
        // A frame to loop back: the back-end then signals both rings' call fds.
        peer.writeValidFrame()
        peer.makeAvailable(ring: 1, heads: [0])
        XCTAssertTrue(waitUntil { backend.statistics.framesSent == 1 })
        // The back-end still answers (the old code slept in write(2) and never did).
        XCTAssertTrue(VirtioFeatures(rawValue: try peer.get(.getFeatures)).contains(.version1))
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
    }

    /// Kick fds made blocking and left empty: a plain read(2) after the idle sleep blocks.
    func testKickFdsMadeBlockingAndEmptyNeverStallTheBackEnd() throws {
        let backend = try startBackend(self) { $0.idlePollsBeforeSleep = 10 }
        let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
        try peer.startEverything()
        for kick in peer.kicks.values { try makeBlocking(kick, count: 0) }
        // Long enough for several idle sleeps, each followed by draining every kick fd.
        MonotonicClock.sleep(milliseconds: 400)
        XCTAssertTrue(VirtioFeatures(rawValue: try peer.get(.getFeatures)).contains(.version1))
        // And a frame still loops back.
        peer.writeValidFrame()
        peer.makeAvailable(ring: 1, heads: [0])
        try peer.kicks[1]?.descriptor.raw.writeEventCount(1)
        XCTAssertTrue(waitUntil { backend.statistics.framesSent == 1 })
    }

    /// The bounded write under the two fds above: a write that would sleep is interrupted
    /// after its timeout and reported as ETIMEDOUT, on any fd (here a full, blocking pipe).
    func testAWriteThatWouldSleepIsInterruptedAfterItsTimeout() throws {
        var ends: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&ends), 0)
        defer { close(ends[0]); close(ends[1]) }
        _ = fcntl(ends[1], F_SETFL, fcntl(ends[1], F_GETFL) | O_NONBLOCK)
        var chunk = [UInt8](repeating: 7, count: 4096)
        while write(ends[1], &chunk, chunk.count) > 0 {}
        _ = fcntl(ends[1], F_SETFL, fcntl(ends[1], F_GETFL) & ~O_NONBLOCK)
        let start = MonotonicClock.nanoseconds()
        XCTAssertEqual(cvs_write_bounded(ends[1], &chunk, 8, 50), -Int(ETIMEDOUT))
        XCTAssertGreaterThanOrEqual(MonotonicClock.nanoseconds() - start, 40_000_000)
        // With room again it writes.
        XCTAssertEqual(read(ends[0], &chunk, chunk.count), 4096)
        XCTAssertEqual(cvs_write_bounded(ends[1], &chunk, 8, 50), 8)
    }
}

/// Clears O_NONBLOCK on the open file behind `notifier` (shared with whoever holds a copy of
/// its fd) and sets its counter to `count`.
func makeBlocking(_ notifier: EventNotifier, count: UInt64) throws {
    let fd = notifier.descriptor.raw
    notifier.drain()
    if count > 0 { try fd.writeEventCount(count) }
    guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0 else {
        throw VirtioError.system("clearing O_NONBLOCK", errno: errno)
    }
}

extension Int32 {
    /// Adds `count` to the eventfd's counter.
    func writeEventCount(_ count: UInt64) throws {
        var value = count
        guard write(self, &value, 8) == 8 else { throw VirtioError.system("writing an eventfd", errno: errno) }
    }
}
