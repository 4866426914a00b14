#if canImport(Glibc)
import Glibc
#endif
import VirtioCore
import XCTest

/// eventfd counting, readiness and adoption of a duplicated descriptor.
final class EventNotifierTests: XCTestCase {
    func testSignalsAddUpAndDrainClears() throws {
        let notifier = try EventNotifier()
        XCTAssertEqual(notifier.drain(), 0, "a fresh eventfd has a zero count (and drain does not block)")
        notifier.signal()
        notifier.signal()
        notifier.signal()
        XCTAssertEqual(notifier.drain(), 3)
        XCTAssertEqual(notifier.drain(), 0)
        notifier.signal()
        XCTAssertEqual(notifier.drain(), 1)
    }

    func testReadinessFollowsTheCount() throws {
        let notifier = try EventNotifier()
        XCTAssertEqual(try Poll.waitReadable(notifier.descriptor.raw, milliseconds: 0), .timedOut)
        notifier.signal()
        XCTAssertEqual(try Poll.waitReadable(notifier.descriptor.raw, milliseconds: 0), .readable)
        notifier.drain()
        XCTAssertEqual(try Poll.waitReadable(notifier.descriptor.raw, milliseconds: 0), .timedOut)
    }

    func testWaitAnyReportsOnlyTheSignalledOnes() throws {
        let a = try EventNotifier(), b = try EventNotifier(), c = try EventNotifier()
        let fds = [a.descriptor.raw, b.descriptor.raw, c.descriptor.raw]
        XCTAssertEqual(try Poll.waitAny(fds, milliseconds: 0), [])
        c.signal()
        a.signal()
        XCTAssertEqual(try Poll.waitAny(fds, milliseconds: 0), [0, 2])
    }

    func testAdoptedDuplicateSharesTheCounter() throws {
        let original = try EventNotifier()
        let copy = dup(original.descriptor.raw)
        XCTAssertGreaterThanOrEqual(copy, 0)
        let adopted = EventNotifier(adopting: OwnedDescriptor(taking: copy))
        adopted.signal()
        adopted.signal()
        XCTAssertEqual(original.drain(), 2)
        original.signal()
        XCTAssertEqual(adopted.drain(), 1)
    }

    func testNotifiersAreDistinctNonBlockingDescriptors() throws {
        let a = try EventNotifier(), b = try EventNotifier()
        XCTAssertNotEqual(a.descriptor.raw, b.descriptor.raw)
        let flags = fcntl(a.descriptor.raw, F_GETFL)
        XCTAssertNotEqual(flags & O_NONBLOCK, 0)
        XCTAssertNotEqual(fcntl(a.descriptor.raw, F_GETFD) & FD_CLOEXEC, 0)
    }
}
