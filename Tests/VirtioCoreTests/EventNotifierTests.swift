#if canImport(Glibc)
import Glibc
#endif
import VirtioCore
import XCTest

/// eventfd counting, readiness and adoption of a duplicated descriptor.
final class EventNotifierTests: XCTestCase {
    /// Signals coalesce: while the counter is non-zero the other end is already woken, so
    /// nothing more is written (a write is where a hostile peer could make us sleep).
    func testSignalsCoalesceAndDrainClears() throws {
        let notifier = try EventNotifier()
        XCTAssertEqual(notifier.drain(), 0, "a fresh eventfd has a zero count (and drain does not block)")
        try notifier.signal()
        try notifier.signal()
        try notifier.signal()
        XCTAssertEqual(notifier.drain(), 1)
        XCTAssertEqual(notifier.drain(), 0)
        try notifier.signal()
        XCTAssertEqual(notifier.drain(), 1)
    }

    func testReadinessFollowsTheCount() throws {
        let notifier = try EventNotifier()
        XCTAssertEqual(try Poll.waitReadable(notifier.descriptor.raw, milliseconds: 0), .timedOut)
        try notifier.signal()
        XCTAssertEqual(try Poll.waitReadable(notifier.descriptor.raw, milliseconds: 0), .readable)
        notifier.drain()
        XCTAssertEqual(try Poll.waitReadable(notifier.descriptor.raw, milliseconds: 0), .timedOut)
    }

    func testWaitAnyReportsOnlyTheSignalledOnes() throws {
        let a = try EventNotifier(), b = try EventNotifier(), c = try EventNotifier()
        let fds = [a.descriptor.raw, b.descriptor.raw, c.descriptor.raw]
        XCTAssertEqual(try Poll.waitAny(fds, milliseconds: 0), [])
        try c.signal()
        try a.signal()
        XCTAssertEqual(try Poll.waitAny(fds, milliseconds: 0), [0, 2])
    }

    func testAdoptedDuplicateSharesTheCounter() throws {
        let original = try EventNotifier()
        let copy = dup(original.descriptor.raw)
        XCTAssertGreaterThanOrEqual(copy, 0)
        let adopted = EventNotifier(adopting: OwnedDescriptor(taking: copy))
        try adopted.signal()
        XCTAssertEqual(original.drain(), 1)
        try original.signal()
        XCTAssertEqual(adopted.drain(), 1)
    }

    func testNotifiersAreDistinctNonBlockingDescriptors() throws {
        let a = try EventNotifier(), b = try EventNotifier()
        XCTAssertNotEqual(a.descriptor.raw, b.descriptor.raw)
        let flags = fcntl(a.descriptor.raw, F_GETFL)
        XCTAssertNotEqual(flags & O_NONBLOCK, 0)
        XCTAssertNotEqual(fcntl(a.descriptor.raw, F_GETFD) & FD_CLOEXEC, 0)
    }

    /// The peer shares the open file: it can clear O_NONBLOCK. An empty counter then makes a
    /// plain read(2) sleep, a full one a plain write(2); drain and signal return at once.
    func testABlockingOpenFileNeverPutsDrainOrSignalToSleep() throws {
        let notifier = try EventNotifier()
        let fd = notifier.descriptor.raw
        XCTAssertEqual(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK), 0)
        XCTAssertEqual(notifier.drain(), 0, "an empty, blocking eventfd")
        var full: UInt64 = 0xFFFF_FFFF_FFFF_FFFE
        XCTAssertEqual(write(fd, &full, 8), 8)
        try notifier.signal()
        XCTAssertEqual(notifier.drain(), full, "nothing was added to a full counter")
    }
}
