#if canImport(Glibc)
import Glibc
#endif
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A switch port's control socket used against the others: half a message, replies never
/// read, requests without end. The port's session ends (or waits its turn) and the other ports
/// keep exchanging frames meanwhile: one serving thread, so any sleep on one port's socket
/// would stop them all.
final class HostileSwitchControlTests: XCTestCase {
    /// Half a header, then nothing: the old switch waited 5 s for the rest, forwarding nothing.
    func testHalfAMessageCostsOtherPortsAtMostItsDeadline() throws {
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 3)
        defer { fabric.stop(); a.stop(); b.stop() }
        let peer = try HostileFrontend(connectingTo: paths[0])
        try sendRaw(Array(rawMessage(request: 1, flags: 1, size: 0).prefix(6)), descriptors: [], on: peer.channel.socket.raw)
        // Frames both ways, each within 2 s, while the half message is pending.
        for _ in 0..<3 { XCTAssertTrue(exchangeBothWays(a, b)) }
        XCTAssertTrue(peer.waitForHangUp(seconds: 2), "the switch kept the port waiting for the rest of its message")
        XCTAssertTrue(exchangeBothWays(a, b))
    }

    /// Requests sent and replies never read: the replies fill the socket, and the old switch
    /// slept in sendmsg for good.
    func testAPortThatNeverReadsItsRepliesIsClosed() throws {
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 3)
        defer { fabric.stop(); a.stop(); b.stop() }
        let peer = try HostileFrontend(connectingTo: paths[0])
        let request = rawMessage(request: 1, flags: 1, size: 0)  // GET_FEATURES
        let socket = peer.channel.socket.raw
        var requests = 0
        let deadline = MonotonicClock.nanoseconds() + 10_000_000_000
        while !Poll.peerHasClosed(socket), MonotonicClock.nanoseconds() < deadline {
            let sent = request.withUnsafeBytes { Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if sent > 0 { requests += 1 } else { MonotonicClock.sleep(milliseconds: 1) }
        }
        XCTAssertTrue(Poll.peerHasClosed(socket), "the switch kept the port open after \(requests) unread replies")
        XCTAssertTrue(exchangeBothWays(a, b))
        XCTAssertTrue(waitUntil { fabric.statistics[0].connections == 1 && !fabric.statistics[0].isUp })
    }

    /// Requests without end, replies read: the port gets 16 messages per round, and the
    /// others' frames go between its rounds.
    func testAPortFloodingRequestsDoesNotStarveTheOthers() throws {
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 3)
        defer { fabric.stop(); a.stop(); b.stop() }
        let peer = try HostileFrontend(connectingTo: paths[0])
        let socket = peer.channel.socket.raw
        let stop = Locked(false)
        // A reader keeps the replies flowing, so only the flood itself is tested.
        let reader = try DedicatedThread(name: "flood-reader") {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !stop.withLock({ $0 }) {
                if (try? Poll.waitReadable(socket, milliseconds: 10)) == .readable {
                    if recv(socket, &buffer, buffer.count, 0) <= 0 { return }
                }
            }
        }
        let writer = try DedicatedThread(name: "flood-writer") {
            var burst: [UInt8] = []
            for _ in 0..<256 { burst += rawMessage(request: 1, flags: 1, size: 0) }
            while !stop.withLock({ $0 }) {
                if burst.withUnsafeBytes({ Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0 { return }
            }
        }
        for _ in 0..<5 { XCTAssertTrue(exchangeBothWays(a, b)) }
        stop.withLock { $0 = true }
        writer.join()
        reader.join()
        XCTAssertFalse(Poll.peerHasClosed(socket), "well-formed requests, however many, are not a violation")
    }

    /// A second front-end connecting to a port that is in use waits in its listener's backlog.
    /// The old switch slept on every listener, so that readable listener ended every sleep at
    /// once: one connect and the switch polled for ever, a CPU taken by anyone with the socket.
    func testAFrontEndWaitingOnABusyPortDoesNotKeepTheSwitchAwake() throws {
        let clock = ServingThreadClock()
        let (fabric, a, b, paths) = try startSwitchWithTwoDevices(ports: 2) { $0.onServingThreadStart = clock.capture }
        defer { fabric.stop(); a.stop(); b.stop() }
        clock.waitUntilCaptured()
        let waiting = try UnixSocket.connect(to: paths[0], retry: .init(timeoutMilliseconds: 1000))
        defer { _ = waiting }
        clock.waitUntilQuiet()  // past the idle polls before sleeping, however slow the machine
        let used = clock.nanosecondsUsed(during: 500)
        XCTAssertLessThan(used, 100_000_000, "an idle switch must sleep, not poll (polling would use ~500 ms)")
        XCTAssertTrue(exchangeBothWays(a, b))
    }
}
