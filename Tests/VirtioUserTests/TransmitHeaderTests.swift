import CVirtioShim
import Synchronization
import VirtioCore
import VirtioUser
import XCTest

/// The virtio-net header of a frame sent without offload reaches the back-end as twelve zero
/// bytes, whatever the headroom held before. The transmit path writes a header only where it
/// is not already zero (so an unchanged line stays shared with the back-end); this checks that
/// the shortcut still clears every byte that is not.
final class TransmitHeaderTests: XCTestCase {
    func testEveryStaleHeaderByteIsClearedBeforeTheBackendReadsIt() throws {
        // What each frame's twelve bytes before the data hold when it is sent: all stale, only
        // the last four (csum_offset, num_buffers), only the flags byte, already zero.
        let stale: [[UInt8]] = [
            [UInt8](repeating: 0xA5, count: 12),
            [UInt8](repeating: 0, count: 8) + [1, 2, 3, 4],
            [1] + [UInt8](repeating: 0, count: 11),
            [UInt8](repeating: 0, count: 12),
        ]
        let seen = Mutex<[[UInt8]]>([])
        let path = try makeSocketPath(self)
        let peer = try HostileBackend(path: path, takeover: .rings { session in
            let heads = session.waitForAvailable(ring: 1, count: stale.count)
            let ring = session.ring(1)
            var headers: [[UInt8]] = []
            for head in heads {
                let descriptor = ring.descriptors[Int(head)]
                let local = session.memory + Int(descriptor.addr - session.region.guestPhysicalAddress + session.region.mmapOffset)
                headers.append(Array(UnsafeRawBufferPointer(start: local, count: VirtioNetHeader.size)))
            }
            seen.withLock { $0 = headers }
        })
        defer { peer.join() }
        let device = try VirtioUserDevice(configuration: hostileBackendDeviceConfiguration(path))
        defer { device.stop() }
        try device.start()

        let burst = PacketBurst(capacity: stale.count)
        XCTAssertEqual(device.allocate(into: burst, count: stale.count), stale.count)
        for i in 0..<stale.count {
            var packet = burst[i]
            stale[i].withUnsafeBytes { (packet.data - VirtioNetHeader.size).copyMemory(from: $0.baseAddress!, byteCount: 12) }
            packet.data.initializeMemory(as: UInt8.self, repeating: UInt8(i), count: 60)
            packet.length = 60
            burst[i] = packet
        }
        XCTAssertEqual(device.transmit(burst), stale.count)
        XCTAssertTrue(waitUntil { peer.ringScriptFinished }, "the back-end did not see the frames")
        let headers = seen.withLock { $0 }
        XCTAssertEqual(headers.count, stale.count)
        for (i, header) in headers.enumerated() {
            XCTAssertEqual(header, [UInt8](repeating: 0, count: 12), "frame \(i) went out with a stale header byte")
        }
    }
}
