#if canImport(Glibc)
import Glibc
#endif

/// CLOCK_MONOTONIC readings and sleeps, without Foundation.
@usableFromInline package enum MonotonicClock {
    /// Nanoseconds since an arbitrary fixed point.
    @inlinable
    package static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    /// Sleeps the calling thread (never call this on Swift's cooperative pool).
    @usableFromInline package static func sleep(milliseconds: Int) {
        guard milliseconds > 0 else { return }
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR {
            request = remaining
        }
    }

    /// `seconds` in nanoseconds, saturating: negative or NaN is 0, and anything past about
    /// 292 years is that (a user's `--duration 1e30` is a long wait, not a trap).
    @usableFromInline package static func nanoseconds(seconds: Double) -> UInt64 {
        guard seconds > 0 else { return 0 }
        let nanoseconds = seconds * 1e9
        return nanoseconds < 9.2e18 ? UInt64(nanoseconds) : 9_200_000_000_000_000_000
    }

    /// The reading `nanoseconds` after `now`, saturating at the end of time.
    @usableFromInline package static func deadline(_ nanoseconds: UInt64, after now: UInt64) -> UInt64 {
        let (sum, overflow) = now.addingReportingOverflow(nanoseconds)
        return overflow ? .max : sum
    }

    /// `milliseconds` in nanoseconds, saturating (a negative count is 0): a configured
    /// timeout of `Int.max` is a long wait, not a trap.
    @usableFromInline package static func nanoseconds(milliseconds: Int) -> UInt64 {
        let (product, overflow) = UInt64(max(0, milliseconds)).multipliedReportingOverflow(by: 1_000_000)
        return overflow ? .max : product
    }

    /// The reading `milliseconds` after `now`, saturating (a negative count is 0).
    @usableFromInline package static func deadline(milliseconds: Int, after now: UInt64) -> UInt64 {
        deadline(nanoseconds(milliseconds: milliseconds), after: now)
    }

    /// Milliseconds from now to `deadline`, rounded up, as poll(2) takes them: 0 once it has
    /// passed, -1 (no limit) for `UInt64.max`.
    @usableFromInline package static func pollMilliseconds(until deadline: UInt64) -> Int32 {
        if deadline == .max { return -1 }
        let remaining = nanoseconds(until: deadline, from: nanoseconds())
        return Int32(clamping: remaining / 1_000_000 + (remaining % 1_000_000 == 0 ? 0 : 1))
    }

    /// Nanoseconds from `now` to `deadline`; 0 once it has passed. A process that was paused
    /// (SIGSTOP, a cgroup freezer, a starved CPU) wakes up past its deadlines: `deadline - now`
    /// would trap there.
    @usableFromInline package static func nanoseconds(until deadline: UInt64, from now: UInt64) -> UInt64 {
        deadline > now ? deadline - now : 0
    }
}

/// When a periodic report is next due: after a pause it is due once, not once per period
/// missed, and the next one falls on the period's grid again.
@usableFromInline package struct PeriodicSchedule: Sendable {
    /// Nanoseconds between reports; 0 for none.
    @usableFromInline package let period: UInt64
    /// The reading at which the next report is due (`UInt64.max`: never).
    @usableFromInline package private(set) var next: UInt64

    @usableFromInline package init(period: UInt64, start: UInt64) {
        self.period = period
        next = period > 0 ? MonotonicClock.deadline(period, after: start) : .max
    }

    /// True when a report is due at `now`; the next is then scheduled past `now`.
    @usableFromInline package mutating func isDue(now: UInt64) -> Bool {
        guard period > 0, now >= next else { return false }
        next = MonotonicClock.deadline(period - (now - next) % period, after: now)
        return true
    }
}
