import CVirtioShim
import Synchronization
@testable import VirtioCore
import XCTest

/// The asymmetric fences behind a queue pair's burst handshake, as a store-buffering litmus
/// test: one thread stores then loads with only a compiler barrier between (the data path),
/// the other stores, runs the heavy fence, then loads (the control path). x86 lets a load pass
/// an earlier store, so without a real barrier on the first thread both loads can read 0; with
/// membarrier, or the TLB shootdown that stands in for it, one of them must see the other's
/// store.
final class AsymmetricFenceTests: XCTestCase {
    private final class Litmus: Sendable {
        let x = Atomic<Int>(0)
        let y = Atomic<Int>(0)
        /// Round the data thread may start (the control thread bumps it once both are reset).
        let round = Atomic<Int>(0)
        /// Rounds the data thread has finished.
        let done = Atomic<Int>(0)
        /// What the data thread loaded from `y` in its last round.
        let seen = Atomic<Int>(0)
    }

    /// Rounds in which both loads read 0 (forbidden with a working heavy fence).
    private func bothMissed(rounds: Int, heavy: () -> Void) throws -> Int {
        let litmus = Litmus()
        let data = try DedicatedThread(name: "litmus-data") {
            for r in 1...rounds {
                while litmus.round.load(ordering: .acquiring) != r { SpinWait.relax() }
                litmus.x.store(1, ordering: .relaxed)
                cvs_light_fence()
                litmus.seen.store(litmus.y.load(ordering: .relaxed), ordering: .relaxed)
                litmus.done.store(r, ordering: .releasing)
            }
        }
        var missed = 0
        for r in 1...rounds {
            litmus.x.store(0, ordering: .relaxed)
            litmus.y.store(0, ordering: .relaxed)
            litmus.round.store(r, ordering: .releasing)
            // Let the data thread get going, so the two sides overlap.
            for _ in 0..<(r % 64) { SpinWait.relax() }
            litmus.y.store(1, ordering: .relaxed)
            heavy()
            let controlSaw = litmus.x.load(ordering: .relaxed)
            while litmus.done.load(ordering: .acquiring) != r { SpinWait.relax() }
            if controlSaw == 0 && litmus.seen.load(ordering: .relaxed) == 0 { missed += 1 }
        }
        data.join()
        return missed
    }

    func testTheHeavyFenceOrdersTheOtherThreadsStoreBeforeItsLoad() throws {
        try XCTSkipUnless(cvs_asymmetric_fences_available() != 0, "membarrier is refused here; both sides use full fences")
        XCTAssertEqual(try bothMissed(rounds: 5_000) { cvs_heavy_fence() }, 0)
    }

    func testTheShootdownStandInOrdersItToo() throws {
        var failed = false
        XCTAssertEqual(try bothMissed(rounds: 5_000) { if cvs_shootdown_barrier() != 0 { failed = true } }, 0)
        XCTAssertFalse(failed, "mprotect of the private page failed")
    }
}
