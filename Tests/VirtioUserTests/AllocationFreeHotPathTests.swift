import CAllocationCounter
import VhostUserBackend
import VirtioUser
import XCTest

/// The data path allocates nothing in steady state: counted with an interposed malloc.
final class AllocationFreeHotPathTests: XCTestCase {
    func testTransmitAndReceiveBurstsAllocateNothing() throws {
        let backend = try startBackend(self, mode: .loopback)
        let path = backend.configuration.socketPath
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        let tx = PacketBurst(capacity: 32)
        let rx = PacketBurst(capacity: 32)

        func cycle() -> Int {
            let added = device.allocate(into: tx, count: tx.space)
            var i = tx.count - added
            while i < tx.count {
                var packet = tx[i]
                packet.length = 64
                tx[i] = packet
                i += 1
            }
            device.transmit(tx)
            let received = device.receive(into: rx)
            device.release(rx)
            return received
        }

        // Warm up: rings wrap, lazy state settles.
        var warm = 0
        while warm < 20_000 { warm += cycle() }

        var received = 0
        allocation_counter_start()
        for _ in 0..<10_000 { received += cycle() }
        let allocations = allocation_counter_stop()

        XCTAssertGreaterThan(received, 0, "traffic must flow while counting, or the count proves nothing")
        XCTAssertEqual(allocations, 0, "allocations during \(received) frames of steady-state bursts")
        device.release(tx)
        device.stop()
    }

    /// The counter itself works: an allocation on this thread is seen.
    func testCounterSeesAnAllocation() {
        allocation_counter_start()
        let array = [Int](repeating: 7, count: 1000)
        let allocations = allocation_counter_stop()
        XCTAssertEqual(array.count, 1000)
        XCTAssertGreaterThan(allocations, 0)
    }
}
