@testable import VirtioCore
import XCTest

/// Time arithmetic that a paused process (SIGSTOP, a frozen cgroup) or a user's extreme value
/// reaches: it saturates, it never traps.
final class MonotonicClockTests: XCTestCase {
    func testConversionsSaturate() {
        XCTAssertEqual(MonotonicClock.nanoseconds(seconds: 1.5), 1_500_000_000)
        XCTAssertEqual(MonotonicClock.nanoseconds(seconds: -1), 0)
        XCTAssertEqual(MonotonicClock.nanoseconds(seconds: .nan), 0)
        XCTAssertEqual(MonotonicClock.nanoseconds(seconds: 1e30), 9_200_000_000_000_000_000)
        XCTAssertEqual(MonotonicClock.nanoseconds(milliseconds: 7), 7_000_000)
        XCTAssertEqual(MonotonicClock.nanoseconds(milliseconds: -7), 0)
        XCTAssertEqual(MonotonicClock.nanoseconds(milliseconds: .max), .max)
        XCTAssertEqual(MonotonicClock.deadline(milliseconds: .max, after: 5), .max)
        XCTAssertEqual(MonotonicClock.deadline(10, after: .max - 5), .max)
    }

    /// `deadline - now` once the deadline has passed was the trap that killed a paused
    /// `virtio-user-pmd` (SIGILL).
    func testTimeUntilAPassedDeadlineIsZero() {
        XCTAssertEqual(MonotonicClock.nanoseconds(until: 100, from: 40), 60)
        XCTAssertEqual(MonotonicClock.nanoseconds(until: 100, from: 5_000), 0)
        XCTAssertEqual(MonotonicClock.pollMilliseconds(until: 0), 0)
        XCTAssertEqual(MonotonicClock.pollMilliseconds(until: .max), -1)
        let soon = MonotonicClock.pollMilliseconds(until: MonotonicClock.nanoseconds() + 1_500_000)
        XCTAssertTrue((1...2).contains(soon), "\(soon) ms: rounded up, never 0 before the deadline")
    }

    /// After a pause a report is due once, and the next falls on the period's grid again.
    func testAScheduleSkipsThePeriodsAPauseMissed() {
        var schedule = PeriodicSchedule(period: 100, start: 1_000)
        XCTAssertFalse(schedule.isDue(now: 1_050))
        XCTAssertTrue(schedule.isDue(now: 1_100))
        XCTAssertEqual(schedule.next, 1_200)
        XCTAssertTrue(schedule.isDue(now: 5_030))  // 38 periods missed
        XCTAssertEqual(schedule.next, 5_100)
        XCTAssertFalse(schedule.isDue(now: 5_031))
        var never = PeriodicSchedule(period: 0, start: 1_000)
        XCTAssertFalse(never.isDue(now: .max))
        XCTAssertEqual(never.next, .max)
    }
}
