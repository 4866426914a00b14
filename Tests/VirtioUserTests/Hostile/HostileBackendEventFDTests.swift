#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import VirtioCore
import VhostUser
import VirtioUser
import XCTest

/// A back-end that turns the device's own kick and call eventfds against it, or stops
/// answering. The fds are shared open files, so O_NONBLOCK and the counters are the back-end's
/// to change. No device call may then block past its stated time, and `stop()` returns within
/// its documented bound (about 2 s).
final class HostileBackendEventFDTests: XCTestCase {
    /// Clears O_NONBLOCK on each fd's open file and sets its counter to `count`.
    private static func makeBlocking(_ descriptors: [OwnedDescriptor], count: UInt64) throws {
        for descriptor in descriptors {
            let fd = descriptor.raw
            var value: UInt64 = 0
            _ = read(fd, &value, 8)
            if count > 0 { try fd.writeEventCount(count) }
            guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0 else {
                throw VirtioError.system("clearing O_NONBLOCK", errno: errno)
            }
        }
    }

    /// Runs `body` on a thread of its own; true when it returned within `milliseconds` (a call
    /// that hangs leaves its thread behind and fails the test instead of hanging it).
    private func finishes(within milliseconds: Int, _ body: @escaping @Sendable () -> Void) -> Bool {
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            body()
            done.signal()
        }
        return done.wait(timeout: .now() + .milliseconds(milliseconds)) == .success
    }

    /// Kick fds made blocking with the counter at its maximum: a plain write(2) of 1 sleeps
    /// until the back-end reads, which a hostile one never does. Transmitting and refilling
    /// receive buffers (both kick) return at once.
    func testKickFdsMadeBlockingAndFullNeverHangATransmit() throws {
        let (peer, device) = try HostileBackend.deviceAfterScript(self) { session in
            try Self.makeBlocking(Array(session.kicks.values), count: 0xFFFF_FFFF_FFFF_FFFE)
        }
        let sent = finishes(within: 3000) {
            for _ in 0..<4 {
                let burst = PacketBurst(capacity: 8)
                fillWithFrames(burst, from: device)
                device.transmit(burst)
                device.release(burst)
                let received = PacketBurst(capacity: 8)
                device.receive(into: received)
                device.release(received)
            }
        }
        XCTAssertTrue(sent, "a transmit or receive slept in a kick the back-end made block")
        XCTAssertGreaterThan(device.statistics.tx.kicks, 0, "the device kicked (the back-end asked for kicks)")
        XCTAssertTrue(finishes(within: 3000) { device.stop() }, "stop() hung")
        peer.join()
    }

    /// Call fds made blocking and empty: after a wait on the call fd, a plain read(2) to clear
    /// it sleeps. A blocking receive returns when its time is up, a `receivedBursts` loop ends
    /// when its task is cancelled, and `stop()` returns.
    func testCallFdsMadeBlockingAndEmptyNeverHangAReceive() throws {
        let (peer, device) = try HostileBackend.deviceAfterScript(self) { session in
            try Self.makeBlocking(Array(session.calls.values), count: 0)
        }

        let returned = finishes(within: 3000) {
            let burst = PacketBurst(capacity: 8)
            _ = device.receive(into: burst, timeoutMilliseconds: 300)
            device.release(burst)
        }
        XCTAssertTrue(returned, "a 300 ms blocking receive did not return")

        let ended = finishes(within: 3000) {
            let done = DispatchSemaphore(value: 0)
            let waiting = Task {
                for await _ in device.receivedBursts(capacity: 8) {}
                done.signal()
            }
            MonotonicClock.sleep(milliseconds: 300)
            waiting.cancel()
            done.wait()
        }
        XCTAssertTrue(ended, "a cancelled receivedBursts loop did not end")
        XCTAssertTrue(finishes(within: 3000) { device.stop() }, "stop() hung")
        peer.join()
    }

    /// A back-end that stops answering once the rings run: stop() still returns within its
    /// bound (the teardown's messages get 1 s in all), not after every reply timeout.
    func testStopReturnsInBoundedTimeWhenTheBackEndStopsAnswering() throws {
        let logs = LogCapture()
        let (peer, device) = try HostileBackend.deviceAfterScript(self, replyTimeoutMilliseconds: 5000, logger: logs.logger()) { _ in }
        let start = MonotonicClock.nanoseconds()
        XCTAssertTrue(finishes(within: 10_000) { device.stop() }, "stop() hung")
        let elapsed = MonotonicClock.nanoseconds() - start
        XCTAssertLessThan(elapsed, 3_000_000_000, "stop() took \(elapsed / 1_000_000) ms; its bound is about 2 s")
        XCTAssertEqual(device.linkState, .down(reason: .stopped))
        let unanswered = logs.named("the back-end did not answer the teardown")
        XCTAssertEqual(unanswered.count, 1, "\(logs.all.map(\.message))")
        XCTAssertEqual(unanswered.first?.level, .warning)
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "buffers lost")
        peer.join()
    }

    /// `linkState` reads the link bit from the back-end (STATUS and CONFIG negotiated) under
    /// the control lock. A back-end that never answers gets 0.5 s, not the 5 s reply timeout,
    /// and has broken the session (a late answer would be taken for the next request's): the
    /// session ends, and the next read answers at once.
    func testALinkStateReadTheBackEndNeverAnswersIsBoundedAndEndsTheSession() throws {
        let path = try makeSocketPath(self)
        let peer = try HostileBackend(
            path: path, features: [.version1, .netStatus, .vhostUserProtocolFeatures], protocolFeatures: .config,
            takeover: .rings { _ in })  // from here on it reads nothing and answers nothing
        let device = try VirtioUserDevice(configuration: hostileBackendDeviceConfiguration(path, replyTimeoutMilliseconds: 5000))
        try device.start()
        XCTAssertTrue(waitUntil { peer.ringScriptFinished })
        var start = MonotonicClock.nanoseconds()
        let state = device.linkState
        var elapsed = MonotonicClock.nanoseconds() - start
        XCTAssertLessThan(elapsed, 2_000_000_000, "linkState took \(elapsed / 1_000_000) ms; its budget is 0.5 s")
        XCTAssertEqual(state, .down(reason: .linkQueryFailed(.connection(.timedOut(waitingFor: "a message header")))))
        start = MonotonicClock.nanoseconds()
        XCTAssertNotEqual(device.linkState, .up)
        elapsed = MonotonicClock.nanoseconds() - start
        XCTAssertLessThan(elapsed, 100_000_000, "the session should have ended, not be asked again")
        device.stop()
        peer.join()
    }
}
