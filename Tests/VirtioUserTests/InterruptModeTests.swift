#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Interrupt mode: receiving that sleeps on the call eventfd instead of polling, as a blocking
/// call with a timeout and as an `AsyncSequence` of bursts.
final class InterruptModeTests: XCTestCase {
    /// CPU time this thread has used, in nanoseconds.
    private func threadCPUNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    private func sendFrames(_ device: VirtioUserDevice, _ stream: FrameStream, from first: UInt64, count: Int) {
        let burst = PacketBurst(capacity: count)
        device.allocate(into: burst, count: count)
        for i in 0..<burst.count {
            var packet = burst[i]
            packet.length = stream.write(first + UInt64(i), to: packet.data)
            burst[i] = packet
        }
        XCTAssertEqual(device.transmit(burst), count)
    }

    /// Rounds of 32 frames with idle gaps: each time the back-end has gone to sleep, our kick
    /// wakes it, its call wakes us, and every frame comes back intact. Waiting with nothing in
    /// flight returns 0 at the timeout, asleep rather than spinning.
    func testBlockingReceiveSleepsUntilFramesArriveAndTimesOutWhenIdle() throws {
        try blockingReceive(eventIndex: true)
    }

    /// The same with notifications by flags (VIRTIO_RING_F_EVENT_IDX not negotiated).
    func testBlockingReceiveWithoutEventIndex() throws {
        try blockingReceive(eventIndex: false)
    }

    private func blockingReceive(eventIndex: Bool) throws {
        let backend = try startBackend(self) { $0.idlePollsBeforeSleep = 100 }
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.eventIndex = eventIndex
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.negotiatedFeatures.contains(.ringEventIndex), eventIndex)
        let stream = FrameStream(seed: 0x1D1E)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 8)
        defer { scratch.deallocate() }
        let burst = PacketBurst(capacity: 32)
        var next: UInt64 = 0
        for _ in 0..<20 {
            MonotonicClock.sleep(milliseconds: 5)  // long enough for the back-end to sleep
            sendFrames(device, stream, from: next, count: 32)
            var received = 0
            while received < 32 {
                let n = device.receive(into: burst, timeoutMilliseconds: 10_000)
                XCTAssertGreaterThan(n, 0, "frames should wake the receive before the timeout")
                guard n > 0 else { return }
                for i in 0..<burst.count {
                    XCTAssertTrue(stream.matches(next, UnsafeRawBufferPointer(burst[i].bytes), scratch: scratch))
                    next += 1
                }
                received += n
                device.release(burst)
            }
        }
        XCTAssertEqual(device.statistics.rx.packets, 640)
        XCTAssertGreaterThan(device.statistics.rx.wakeups, 0, "the back-end's call notification ended waits")

        // Idle: nothing in flight. The wait ends at its timeout with nothing, having slept.
        let cpuBefore = threadCPUNanoseconds()
        XCTAssertEqual(device.receive(into: burst, timeoutMilliseconds: 500), 0)
        let cpuUsed = threadCPUNanoseconds() - cpuBefore
        print("interrupt mode: 500 ms idle wait used \(cpuUsed / 1000) µs of CPU")
        XCTAssertLessThan(cpuUsed, 100_000_000, "an idle wait must sleep, not poll (a poll loop would use ~500 ms)")
        XCTAssertEqual(device.receive(into: burst, queue: 9, timeoutMilliseconds: 10), 0, "no such pair")
    }

    /// The AsyncSequence: a task sends and awaits bursts in turn; every frame arrives intact.
    /// Stopping the device ends a sequence that is waiting.
    func testReceivedBurstsDeliversEveryFrameAndEndsWhenTheDeviceStops() async throws {
        let backend = try startBackend(self) { $0.idlePollsBeforeSleep = 100 }
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        let stream = FrameStream(seed: 0xA5C)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: 2048, alignment: 8)
        defer { scratch.deallocate() }
        var next: UInt64 = 0
        var mismatched = 0
        do {
            // The iterator's last burst goes back to the pool when it is dropped, at the end.
            var iterator = device.receivedBursts().makeAsyncIterator()
            for _ in 0..<50 {
                let first = next
                sendFrames(device, stream, from: first, count: 16)
                while next < first + 16 {
                    guard let burst = await iterator.next() else { return XCTFail("the sequence ended early") }
                    for i in 0..<burst.count {
                        if !stream.matches(next, UnsafeRawBufferPointer(burst[i].bytes), scratch: scratch) { mismatched += 1 }
                        next += 1
                    }
                }
            }
        }
        XCTAssertEqual(next, 800)
        XCTAssertEqual(mismatched, 0)

        // A waiting iteration ends once the device stops.
        let waiting = Task {
            var count = 0
            for await burst in device.receivedBursts(capacity: 8) { count += burst.count }
            return count
        }
        MonotonicClock.sleep(milliseconds: 200)
        device.stop()
        let counted = await waiting.value
        XCTAssertEqual(counted, 0)
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "bursts left in the sequence went back")
    }

    /// The back-end's side of idling: with a device connected and its receive buffers posted
    /// (which are not work), the serving thread sleeps on kicks instead of polling.
    func testAnIdleBackendSleepsWhileReceiveBuffersWait() throws {
        let clock = ServingThreadClock()
        let backend = try startBackend(self) { $0.onServingThreadStart = clock.capture }
        clock.waitUntilCaptured()
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 3), total: 1000).intact, 1000)
        clock.waitUntilQuiet()  // past the idle polls before sleeping, however slow the machine
        let used = clock.nanosecondsUsed(during: 500)
        print("interrupt mode: idle back-end thread used \(used / 1000) µs of CPU in 500 ms")
        XCTAssertLessThan(used, 100_000_000, "an idle back-end must sleep, not poll (polling would use ~500 ms)")
    }

    /// A wait whose task is cancelled before it begins (the cancellation handler then runs
    /// before the continuation exists) returns at once. It used to lose that cancellation and
    /// never return: a task cancelled just as `receivedBursts` went to sleep hung for good.
    func testAWaitCancelledBeforeItBeginsReturnsAtOnce() {
        let returned = DispatchSemaphore(value: 0)
        Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await ReadinessWait.wait(descriptor: -1, milliseconds: 600_000)
            returned.signal()
        }
        XCTAssertEqual(returned.wait(timeout: .now() + 10), .success, "a wait cancelled before it began never returned")
    }

    /// Cancelling the task ends the sequence too.
    func testCancellingTheTaskEndsTheSequence() async throws {
        let backend = try startBackend(self)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        let waiting = Task {
            var bursts = 0
            for await _ in device.receivedBursts() { bursts += 1 }
            return bursts
        }
        MonotonicClock.sleep(milliseconds: 100)
        waiting.cancel()
        let bursts = await waiting.value
        XCTAssertEqual(bursts, 0)
        XCTAssertEqual(device.linkState, .up)
    }
}

/// A semaphore a `Sendable` closure may capture.
final class DispatchSemaphoreBox: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    func signal() { semaphore.signal() }
    func wait() { semaphore.wait() }
}

/// The CPU time of a serving thread (captured in its `onServingThreadStart`): an idle one must
/// sleep, and this tells sleeping from polling without timing anything.
final class ServingThreadClock: @unchecked Sendable {
    private var id = clockid_t(0)
    private let ready = DispatchSemaphoreBox()

    /// For `onServingThreadStart`.
    var capture: @Sendable () -> Void {
        { [self] in
            pthread_getcpuclockid(pthread_self(), &id)
            ready.signal()
        }
    }

    func waitUntilCaptured() { ready.wait() }

    /// Waits (at most `limit` ms) for a 100 ms window in which the thread used under 20 ms of
    /// CPU: the idle polls before a sleep take 20,000 rounds, which a slow or busy machine
    /// stretches well past any fixed wait. A thread that never sleeps never gets quiet, and the
    /// caller's measurement then fails as it should.
    func waitUntilQuiet(limit: Int = 5000) {
        var waited = 0
        while waited < limit, nanosecondsUsed(during: 100) >= 20_000_000 { waited += 100 }
    }

    /// The CPU time the thread used while the caller slept `milliseconds`.
    func nanosecondsUsed(during milliseconds: Int) -> UInt64 {
        func cpu() -> UInt64 {
            var time = timespec()
            clock_gettime(id, &time)
            return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
        }
        let before = cpu()
        MonotonicClock.sleep(milliseconds: milliseconds)
        return cpu() - before
    }
}
