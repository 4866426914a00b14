#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A back-end on another thread that keeps rewriting the used entries it has published, ids
/// and lengths, valid and not, while the device reads them. The device reads each entry once
/// and uses its copy, so whatever it happened to read, it either delivers a frame its buffer
/// holds, drops a bad length, or stops the ring for a bad id; it never hands out a buffer twice, loses one,
/// or delivers a length its buffer cannot hold.
///
/// The writes race the device's plain reads by design (that is the attack), so ThreadSanitizer
/// would report the test itself: under TSan it is skipped.
final class RacingBackendTests: XCTestCase {
    private static var underThreadSanitizer: Bool { dlsym(nil, "__tsan_init") != nil }

    /// Consumes what the device made available on `ring`, completes each buffer with a valid
    /// entry, then rewrites that entry 64 times with a random mix of valid and wild ids and
    /// lengths before leaving it valid, until `milliseconds` pass.
    private static func race(_ session: HostileBackend.Session, ring index: UInt32, validLength: UInt32, milliseconds: Int, seed: UInt64) {
        let ring = session.ring(index)
        let mask = ring.size - 1
        var generator = SplitMix64(seed: seed)
        var consumed: UInt16 = 0
        var used: UInt16 = 0
        let end = MonotonicClock.deadline(milliseconds: milliseconds, after: MonotonicClock.nanoseconds())
        while MonotonicClock.nanoseconds() < end {
            guard cvs_load_acquire_u16(cvs_avail_idx(ring.avail)) != consumed else { continue }
            let head = UInt32(cvs_avail_ring(ring.avail)[Int(consumed) & mask])
            consumed &+= 1
            let slot = Int(used) & mask
            used &+= 1
            session.complete(ring: index, slot: slot, id: head, length: validLength, usedIndex: used)
            let entries = cvs_used_ring(ring.used)!
            for _ in 0..<64 {
                let r = generator.next()
                let id = r & 3 == 0 ? UInt32(truncatingIfNeeded: r >> 8) % 70_000 : head
                let length = r & 12 == 0 ? UInt32(truncatingIfNeeded: r >> 32) % 100_000 : validLength
                entries[slot] = cvs_vring_used_elem(id: id, len: length)
            }
            entries[slot] = cvs_vring_used_elem(id: head, len: validLength)
        }
    }

    /// Eight rounds, each a fresh device against a back-end racing on `ring`; `drive` runs the
    /// device's side until the race ends. Then every buffer is back, none was handed out twice.
    private func rounds(ring: UInt32, validLength: UInt32, seed: UInt64, drive: (VirtioUserDevice, HostileBackend, Int) -> Void) throws {
        for round in 0..<8 {
            let path = try makeSocketPath(self)
            let peer = try HostileBackend(path: path, takeover: .rings { session in
                Self.race(session, ring: ring, validLength: validLength, milliseconds: 150, seed: seed + UInt64(round))
            })
            let device = try VirtioUserDevice(configuration: hostileBackendDeviceConfiguration(path))
            try device.start()
            drive(device, peer, round)
            device.stop()
            peer.join()
            let statistics = device.statistics
            XCTAssertEqual(device.availableBuffers(), statistics.poolSize, "round \(round): buffers lost or doubled")
            XCTAssertEqual(device.invalidReleases(), 0, "round \(round): a buffer handed out twice")
            XCTAssertEqual(statistics.tx.packets, statistics.tx.completed + statistics.tx.drops, "round \(round): transmit balance")
        }
    }

    func testReceiveEntriesRewrittenWhileReadBreakNothing() throws {
        if Self.underThreadSanitizer { throw XCTSkip("the back-end's writes race the device's reads by design") }
        try rounds(ring: 0, validLength: UInt32(12 + 64), seed: 0) { device, peer, round in
            let burst = PacketBurst(capacity: 32)
            while !peer.ringScriptFinished {
                device.receive(into: burst)
                for i in 0..<burst.count {
                    // A wild length the buffer can hold is a frame like any other; one it
                    // cannot must never come through.
                    XCTAssertTrue((0...VirtioUserDevice.maximumFrameLength).contains(burst[i].length), "round \(round): a frame of \(burst[i].length) bytes")
                }
                device.release(burst)
            }
        }
    }

    func testTransmitCompletionsRewrittenWhileReadBreakNothing() throws {
        if Self.underThreadSanitizer { throw XCTSkip("the back-end's writes race the device's reads by design") }
        try rounds(ring: 1, validLength: 0, seed: 100) { device, peer, _ in
            let burst = PacketBurst(capacity: 32)
            while !peer.ringScriptFinished {
                fillWithFrames(burst, from: device)
                device.transmit(burst)
                device.release(burst)
            }
        }
    }
}
