import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Checksum and segmentation offload metadata in the virtio-net header: set on transmit,
/// reported on receive, negotiated only when asked for; our loopback passes requests through
/// to a receiver that negotiated them, fills checksums in for one that did not, and drops
/// large TCP frames it cannot segment.
final class OffloadTests: XCTestCase {
    /// Internet checksum (RFC 1071) of `bytes`, starting from `initial`.
    private func sum(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt32 {
        var total = initial
        var i = 0
        while i + 1 < bytes.count { total += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
        if i < bytes.count { total += UInt32(bytes[i]) << 8 }
        while total >> 16 != 0 { total = (total & 0xFFFF) + (total >> 16) }
        return total
    }

    /// An Ethernet + IPv4 + UDP (or TCP) frame of `length` bytes whose L4 checksum field holds
    /// the pseudo-header sum, as a driver leaves it for checksum offload.
    private func frame(length: Int, tcp: Bool = false) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: length)
        b[0...5] = [2, 0, 0, 0, 0, 2]; b[6...11] = [2, 0, 0, 0, 0, 1]; b[12] = 0x08
        let ipLength = length - 14
        b[14] = 0x45; b[16] = UInt8(ipLength >> 8); b[17] = UInt8(ipLength & 0xFF); b[22] = 64; b[23] = tcp ? 6 : 17
        b[26...29] = [192, 0, 2, 1]; b[30...33] = [192, 0, 2, 2]
        let l4Length = length - 34
        if tcp {
            b[34] = 0x30; b[35] = 0x39; b[36] = 0x00; b[37] = 80; b[46] = 0x50; b[47] = 0x18
        } else {
            b[34] = 0x30; b[35] = 0x39; b[36] = 0x00; b[37] = 9; b[38] = UInt8(l4Length >> 8); b[39] = UInt8(l4Length & 0xFF)
        }
        for i in (tcp ? 54 : 42)..<length { b[i] = UInt8(truncatingIfNeeded: i &* 31 &+ 7) }
        let pseudo = sum([192, 0, 2, 1, 192, 0, 2, 2, 0, tcp ? 6 : 17, UInt8(l4Length >> 8), UInt8(l4Length & 0xFF)])
        let field = tcp ? 50 : 40
        b[field] = UInt8(pseudo >> 8); b[field + 1] = UInt8(pseudo & 0xFF)
        return b
    }

    /// True when the L4 checksum of `bytes` (an IPv4 frame) verifies.
    private func checksumVerifies(_ bytes: [UInt8], tcp: Bool = false) -> Bool {
        let l4Length = bytes.count - 34
        let pseudo = sum([192, 0, 2, 1, 192, 0, 2, 2, 0, tcp ? 6 : 17, UInt8(l4Length >> 8), UInt8(l4Length & 0xFF)])
        return sum(Array(bytes[34...]), initial: pseudo) == 0xFFFF
    }

    private func device(_ backend: VhostUserBackend, _ offloads: VirtioUserDevice.Offloads) throws -> VirtioUserDevice {
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.offloads = offloads
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        return device
    }

    /// Sends `bytes` (in as many buffers as needed) with `offload`; returns what came back:
    /// the bytes, the first segment's offload fields, and its segment count.
    private func roundTrip(_ device: VirtioUserDevice, _ bytes: [UInt8], offload: VirtioNetOffload) -> ([UInt8], VirtioNetOffload)? {
        let room = VirtioUserDevice.maximumFrameLength
        let count = (bytes.count + room - 1) / room
        let tx = PacketBurst(capacity: count)
        device.allocate(into: tx, count: count)
        for k in 0..<count {
            var packet = tx[k]
            let part = min(room, bytes.count - k * room)
            bytes.withUnsafeBytes { packet.data.copyMemory(from: $0.baseAddress! + k * room, byteCount: part) }
            packet.length = part
            packet.segments = k == 0 ? UInt16(count) : 0
            if k == 0 { packet.setOffload(offload) }
            tx[k] = packet
        }
        XCTAssertEqual(device.transmit(tx), count)
        let rx = PacketBurst(capacity: 64)
        guard waitUntil(seconds: 5, { device.receive(into: rx); return !rx.isEmpty }) else { return nil }
        var received: [UInt8] = []
        for i in 0..<rx.count { received += Array(UnsafeRawBufferPointer(rx[i].bytes)) }
        let reported = rx[0].offload
        device.release(rx)
        return (received, reported)
    }

    private let udpChecksum = VirtioNetOffload(flags: VirtioNetOffload.needsChecksum, checksumStart: 34, checksumOffset: 6)

    func testAChecksumRequestReachesAReceiverThatNegotiatedGuestCsum() throws {
        let backend = try startBackend(self)
        let device = try device(backend, [.transmitChecksum, .receiveChecksum])
        XCTAssertTrue(device.negotiatedFeatures.isSuperset(of: [.netCsum, .netGuestCsum]))
        let sent = frame(length: 300)
        guard let (bytes, offload) = roundTrip(device, sent, offload: udpChecksum) else { return XCTFail("nothing came back") }
        XCTAssertEqual(bytes, sent, "passed through untouched")
        XCTAssertEqual(offload, udpChecksum, "the request is reported, for the receiver to complete")
        XCTAssertFalse(checksumVerifies(bytes))
    }

    func testTheBackendFillsInTheChecksumForAReceiverWithoutGuestCsum() throws {
        let backend = try startBackend(self)
        let device = try device(backend, [.transmitChecksum])
        XCTAssertFalse(device.negotiatedFeatures.contains(.netGuestCsum))
        for length in [60, 301, 1514, 6001] {  // odd and even, one buffer and three
            let sent = frame(length: length)
            guard let (bytes, offload) = roundTrip(device, sent, offload: udpChecksum) else { return XCTFail("nothing came back") }
            XCTAssertTrue(offload.isEmpty, "\(length): delivered as a plain frame")
            XCTAssertTrue(checksumVerifies(bytes), "\(length): the checksum was filled in")
            XCTAssertEqual(Array(bytes[..<40]) + Array(bytes[42...]), Array(sent[..<40]) + Array(sent[42...]), "\(length): only the checksum changed")
        }
    }

    func testALargeTCPFrameReachesAReceiverThatNegotiatedGuestTSO4() throws {
        let backend = try startBackend(self)
        let device = try device(backend, [.transmitChecksum, .receiveChecksum, .transmitSegmentation4, .receiveSegmentation4])
        let tso = VirtioNetOffload(flags: VirtioNetOffload.needsChecksum, gsoType: VirtioNetOffload.gsoTCPv4,
                                   headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        let sent = frame(length: 9000, tcp: true)
        guard let (bytes, offload) = roundTrip(device, sent, offload: tso) else { return XCTFail("nothing came back") }
        XCTAssertEqual(bytes, sent)
        XCTAssertEqual(offload, tso)
    }

    func testALargeTCPFrameTheReceiverCannotTakeIsDroppedAndCounted() throws {
        let backend = try startBackend(self)
        let device = try device(backend, [.transmitChecksum, .transmitSegmentation4])
        let tso = VirtioNetOffload(flags: VirtioNetOffload.needsChecksum, gsoType: VirtioNetOffload.gsoTCPv4,
                                   headerLength: 54, gsoSize: 1448, checksumStart: 34, checksumOffset: 16)
        let tx = PacketBurst(capacity: 1)
        device.allocate(into: tx, count: 1)
        var packet = tx[0]
        packet.length = 1500
        packet.setOffload(tso)
        tx[0] = packet
        XCTAssertEqual(device.transmit(tx), 1)
        XCTAssertTrue(waitUntil { backend.statistics.drops == 1 })
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 4), total: 500).intact, 500, "plain frames still flow")
    }

    func testAnOffloadThatWasNotNegotiatedIsDroppedByTheDevice() throws {
        let backend = try startBackend(self)
        let device = try device(backend, [])
        XCTAssertTrue(device.negotiatedFeatures.isDisjoint(with: [.netCsum, .netGuestCsum, .netHostTSO4, .netGuestTSO4]),
                      "offloads are negotiated only when asked for")
        let tx = PacketBurst(capacity: 1)
        device.allocate(into: tx, count: 1)
        var packet = tx[0]
        packet.length = 100
        packet.setOffload(udpChecksum)
        tx[0] = packet
        XCTAssertEqual(device.transmit(tx), 1)
        XCTAssertEqual(device.statistics.tx.drops, 1)
        device.stop()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize)
        XCTAssertEqual(backend.statistics.framesReceived, 0)
    }
}
