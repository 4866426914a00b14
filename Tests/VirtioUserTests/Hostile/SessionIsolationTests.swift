#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import Foundation
import Synchronization
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A back-end that leaves may keep what the device shared with it: a mapping of its memory and
/// copies of its eventfds. None of that may reach the sessions after it. And a back-end that
/// punches a hole in hugepage memory (seals cannot stop it) ends only its own session.
final class SessionIsolationTests: XCTestCase {
    /// What the departed back-end kept.
    private final class Kept: @unchecked Sendable {
        var memory: OwnedDescriptor?
        var kicks: [OwnedDescriptor] = []
        var calls: [OwnedDescriptor] = []
    }

    /// Reads and clears an eventfd without sleeping (the test's own copy is blocking-safe).
    private static func drained(_ descriptor: OwnedDescriptor) -> UInt64 {
        EventNotifier(adopting: OwnedDescriptor(taking: dup(descriptor.raw))).drain()
    }

    func testABackEndThatLeftSeesNothingOfTheNextSession() throws {
        let path = try makeSocketPath(self)
        let kept = Kept()
        var spy: HostileBackend? = try HostileBackend(path: path, takeover: .rings { session in
            kept.memory = session.memoryDescriptor
            kept.kicks = Array(session.kicks.values)
            kept.calls = Array(session.calls.values)
            _ = shutdown(session.channel.socket.raw, Int32(SHUT_RDWR))
        })
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.replyTimeoutMilliseconds = 1000
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertTrue(waitUntil { spy?.ringScriptFinished == true })
        spy?.join()
        spy = nil
        XCTAssertTrue(waitUntil { device.linkState != .up })

        // The departed back-end's view, as session 1 left it.
        let memory = try XCTUnwrap(kept.memory)
        let length = Int(cvs_file_size(memory.raw))
        let mapping = try XCTUnwrap(cvs_mmap_shared(memory.raw, length, 0))
        defer { _ = cvs_munmap(mapping, length) }
        let before = Data(bytes: mapping, count: length)
        for kick in kept.kicks { _ = Self.drained(kick) }

        // Session 2, with a back-end that sleeps when idle (so the device kicks it).
        let backend = try startBackend(self) { $0.socketPath = path; $0.idlePollsBeforeSleep = 10 }
        defer { backend.stop() }
        XCTAssertTrue(waitUntil { device.linkState == .up })
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 0x5E55), total: 2000).intact, 2000)
        // The back-end goes to sleep when idle and asks for kicks; on a loaded machine its
        // thread may take more than one pause to get there, so a few rounds are allowed.
        let kicksBefore = device.statistics.tx.kicks
        XCTAssertTrue(waitUntil(seconds: 10) {
            MonotonicClock.sleep(milliseconds: 100)
            XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 0x5E56), total: 32).intact, 32)
            return device.statistics.tx.kicks > kicksBefore
        }, "session 2 never kicked its back-end")

        XCTAssertTrue(Data(bytes: mapping, count: length) == before, "the departed back-end's mapping saw session 2's rings or frames")
        for (index, kick) in kept.kicks.enumerated() {
            XCTAssertEqual(Self.drained(kick), 0, "the departed back-end's kick fd \(index) saw session 2's kicks")
        }
        // Its call fds no longer reach the device either: a signal on them wakes nothing.
        let wakeupsBefore = device.statistics.rx.wakeups
        for call in kept.calls { try call.raw.writeEventCount(1) }
        let burst = PacketBurst(capacity: 8)
        XCTAssertEqual(device.receive(into: burst, timeoutMilliseconds: 200), 0)
        XCTAssertEqual(device.statistics.rx.wakeups, wakeupsBefore, "a departed back-end's call woke the device")
        device.release(burst)
        device.stop()
    }

    /// Seals stop a back-end from shrinking the device's memory, not from punching holes in it.
    /// On hugetlbfs, with no free hugepage to fill the hole, the device's next access raises
    /// SIGBUS. The device lives: the session ends with the reason, and the next session (with
    /// hugepages to spare again) gets fresh memory and carries frames.
    func testAHolePunchedInHugepageMemoryEndsOnlyTheSession() throws {
        guard getuid() == 0 else { throw XCTSkip("reserving hugepages needs root; CI runs as root") }
        try reserveHugepages(64, for: self)
        let path = try makeSocketPath(self)
        let knob = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
        let punched = Atomic<Bool>(false)
        var spy: HostileBackend? = try HostileBackend(path: path, takeover: .rings { session in
            // The pool gives up every page not in use, so the hole cannot be filled again.
            try "0".write(toFile: knob, atomically: false, encoding: .utf8)
            let fd = session.memoryDescriptor.raw
            punched.store(punchHole(fd, offset: 0, length: Int(cvs_file_size(fd))) == 0, ordering: .releasing)
        })
        var configuration = VirtioUserDevice.Configuration(socketPath: path)
        configuration.memory = .hugepages2M
        configuration.fallbackToNormalPages = false
        configuration.replyTimeoutMilliseconds = 1000
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertTrue(waitUntil { spy?.ringScriptFinished == true })
        XCTAssertTrue(punched.load(ordering: .acquiring), "fallocate(PUNCH_HOLE) failed: \(errno)")

        // The data path touches the memory: SIGBUS, absorbed.
        let burst = PacketBurst(capacity: 8)
        fillWithFrames(burst, from: device)
        device.transmit(burst)
        device.receive(into: burst)
        device.release(burst)
        XCTAssertTrue(waitUntil {
            device.linkState == .down(reason: .failed(.memory(.holePunched)))
        }, "the link should go down naming the hole; it is \(device.linkState)")
        spy?.join()
        spy = nil

        // Hugepages again, and a well-behaved back-end: fresh memory, frames flow.
        try "64".write(toFile: knob, atomically: false, encoding: .utf8)
        let backend = try startBackend(self) { $0.socketPath = path }
        defer { backend.stop() }
        XCTAssertTrue(waitUntil { device.linkState == .up }, "no session after the hole: \(device.linkState)")
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 0x401E), total: 1000).intact, 1000)
        device.stop()
    }
}

/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE), which Glibc's Swift module does not
/// export: what a hostile back-end does to memory it was given.
func punchHole(_ fd: Int32, offset: Int, length: Int) -> Int32 {
    typealias Fallocate = @convention(c) (Int32, Int32, Int, Int) -> Int32
    guard let symbol = dlsym(nil, "fallocate") else { return -1 }
    let fallocate = unsafeBitCast(symbol, to: Fallocate.self)
    return fallocate(fd, 0x02 | 0x01, offset, length)
}
