import CAllocationCounter
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// The data path allocates nothing in steady state: counted with an interposed malloc.
final class AllocationFreeHotPathTests: XCTestCase {
    /// Device transmit and receive (on this thread) and the back-end's forwarding loop (on its
    /// serving thread) allocate nothing per burst once traffic is flowing.
    func testDeviceBurstsAndBackendForwardingAllocateNothing() throws {
        try countAllocations(segments: 1)
    }

    /// The same with 6,000-byte frames in three buffers each: indirect tables on transmit,
    /// mergeable buffers on receive, their reassembly counted.
    func testChainedFramesAllocateNothingEither() throws {
        try countAllocations(segments: 3)
    }

    /// Both again over packed rings (VIRTIO_F_RING_PACKED), on both sides.
    func testPackedRingsAllocateNothing() throws {
        try countAllocations(segments: 1, packed: true)
        try countAllocations(segments: 3, packed: true)
    }

    private func countAllocations(segments: Int, packed: Bool = false) throws {
        try skipUnderSanitizers()
        let backend = try startBackend(self) { configuration in
            configuration.onServingThreadStart = { allocation_counter_watch_this_thread() }
        }
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.packedRing = packed
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertEqual(device.negotiatedFeatures.contains(.ringPacked), packed)
        let tx = PacketBurst(capacity: 32)
        let rx = PacketBurst(capacity: 32)

        func cycle() -> Int {
            // Whole frames only: `segments` buffers each.
            let added = device.allocate(into: tx, count: (tx.space / segments) * segments)
            var i = tx.count - added
            while i < tx.count {
                var packet = tx[i]
                packet.length = segments == 1 ? 64 : 2000
                packet.segments = segments == 1 ? 1 : ((i - (tx.count - added)) % segments == 0 ? UInt16(segments) : 0)
                tx[i] = packet
                i += 1
            }
            device.transmit(tx)
            let received = device.receive(into: rx)
            device.release(rx)
            return received
        }

        // Warm up: rings wrap, lazy state settles, the back-end is past its set-up.
        var warm = 0
        while warm < 20_000 { warm += cycle() }

        let backendBefore = allocation_counter_watched_total()
        let forwardedBefore = backend.statistics.framesSent
        var received = 0
        allocation_counter_start()
        for _ in 0..<10_000 { received += cycle() }
        let allocations = allocation_counter_stop()
        let backendAllocations = allocation_counter_watched_total() - backendBefore
        let forwarded = backend.statistics.framesSent - forwardedBefore

        XCTAssertGreaterThan(received, 0, "traffic must flow while counting, or the count proves nothing")
        XCTAssertGreaterThan(forwarded, 0)
        XCTAssertEqual(allocations, 0, "device allocations during \(received) frames of steady-state bursts")
        XCTAssertEqual(backendAllocations, 0, "back-end allocations while it forwarded \(forwarded) frames")
        print("allocations (\(packed ? "packed" : "split"), \(segments) buffer(s) a frame): device \(allocations) in \(received) frames, back-end \(backendAllocations) in \(forwarded) frames")
        device.release(tx)
        device.stop()
        // Join the serving thread now: its session teardown allocates, and the watched total is
        // global, so a back-end left running would count in the next call's window.
        backend.stop()
    }

    /// The watched-thread total sees a thread's allocations.
    func testWatchedThreadCounterSeesAnAllocation() throws {
        try skipUnderSanitizers()
        let before = allocation_counter_watched_total()
        let thread = try DedicatedThread(name: "alloc-probe") {
            allocation_counter_watch_this_thread()
            let array = [Int](repeating: 1, count: 100)
            precondition(array.count == 100)
        }
        thread.join()
        XCTAssertGreaterThan(allocation_counter_watched_total() - before, 0)
    }

    /// The counter itself works: an allocation on this thread is seen.
    func testCounterSeesAnAllocation() throws {
        try skipUnderSanitizers()
        allocation_counter_start()
        let array = [Int](repeating: 7, count: 1000)
        let allocations = allocation_counter_stop()
        XCTAssertEqual(array.count, 1000)
        XCTAssertGreaterThan(allocations, 0)
    }

    /// Under ASan/TSan the sanitizer runtime owns malloc, so nothing can be counted; the same
    /// tests run (and must pass) in the plain pass of Scripts/test.sh.
    private func skipUnderSanitizers() throws {
        try XCTSkipUnless(allocation_counter_available() == 1, "allocation counting runs in the plain (unsanitized) pass")
    }
}
