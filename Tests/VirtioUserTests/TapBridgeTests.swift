import CAllocationCounter
import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// `vhost-user-backend --mode tap`: our device talks to the kernel's network stack through a
/// TAP that the test moves into a network namespace of its own (addresses from TEST-NET-1,
/// 192.0.2.0/24, so nothing can leave it).
final class TapBridgeTests: XCTestCase {
    private let kernelAddress: [UInt8] = [192, 0, 2, 1]
    private let deviceAddress: [UInt8] = [192, 0, 2, 2]

    /// The back-end in tap mode, with its TAP in a fresh namespace as 192.0.2.1/24, and our
    /// device connected to it.
    private struct KernelPeer {
        let backend: VhostUserBackend
        let device: VirtioUserDevice
        let namespace: String
        let tap: String
    }

    private func kernelPeer(
        packed: Bool = false, offloads: VirtioUserDevice.Offloads = [],
        adjust: (inout VhostUserBackend.Configuration) -> Void = { _ in }
    ) throws -> KernelPeer {
        let kernel = try tapBackendInNamespace(self, adjust: adjust)
        let device = try connectDevice(to: kernel.backend, packed: packed, offloads: offloads)
        return KernelPeer(backend: kernel.backend, device: device, namespace: kernel.namespace, tap: kernel.tap)
    }

    private func connectDevice(to backend: VhostUserBackend, packed: Bool = false, offloads: VirtioUserDevice.Offloads = []) throws -> VirtioUserDevice {
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.packedRing = packed
        configuration.offloads = offloads
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        addTeardownBlock { device.stop() }
        return device
    }

    func testDeviceResolvesAndPingsTheKernelOnSplitRings() throws {
        try resolveAndPing(try kernelPeer())
    }

    func testDeviceResolvesAndPingsTheKernelOnPackedRings() throws {
        let peer = try kernelPeer(packed: true)
        XCTAssertTrue(peer.device.negotiatedFeatures.contains(.ringPacked))
        try resolveAndPing(peer)
    }

    /// ARP for the kernel's address, then 60 echo requests of 0…1,416 data bytes: every reply
    /// carries the request's identifier, sequence number and data, with checksums that verify.
    private func resolveAndPing(_ peer: KernelPeer) throws {
        let kernelMAC = try resolveKernelMAC(peer)
        for sequence in 0..<60 {
            let data = (0..<(sequence * 24)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ sequence) }
            let request = echoRequest(from: peer.device.macAddress, to: kernelMAC, identifier: 0x5157, sequence: UInt16(sequence), data: data)
            try send(request, on: peer.device)
            let reply = try XCTUnwrap(receive(on: peer.device) { self.isEchoReply($0) }, "echo reply \(sequence)")
            XCTAssertEqual(Array(reply.bytes[0..<6]), macBytes(peer.device.macAddress))
            XCTAssertEqual(Array(reply.bytes[26..<30]), kernelAddress)
            XCTAssertEqual(Array(reply.bytes[30..<34]), deviceAddress)
            XCTAssertEqual(Array(reply.bytes[38..<42]), [0x51, 0x57, 0, UInt8(sequence)])
            XCTAssertEqual(Array(reply.bytes[42...]), data, "echo reply \(sequence) carries the request's data")
            XCTAssertEqual(checksum(reply.bytes[14..<34]), 0, "IPv4 header checksum")
            XCTAssertEqual(checksum(reply.bytes[34...]), 0, "ICMP checksum")
        }
        // The back-end adds to its counters after it publishes a burst: the last reply can be
        // in our hands a moment before it is counted.
        _ = waitUntil { peer.backend.statistics.framesSent >= 61 }
        let statistics = peer.backend.statistics
        XCTAssertEqual(statistics.drops, 0)
        XCTAssertEqual(statistics.protocolErrors, 0)
        XCTAssertEqual(statistics.framesReceived, 61, "the ARP request and 60 echo requests went to the TAP")
        XCTAssertEqual(statistics.framesSent, 61, "the kernel's ARP reply and 60 echo replies came back, nothing else (IPv6 is off)")
    }

    /// The back-end's serving thread allocates nothing per frame in tap mode: 1,000 pings
    /// through the kernel, counted after a warm-up. (It never sleeps here: the idle path, which
    /// runs after 20,000 empty polls, is not per frame.)
    func testTapForwardingAllocatesNothing() throws {
        try XCTSkipUnless(allocation_counter_available() == 1, "allocation counting runs in the plain (unsanitized) pass")
        let peer = try kernelPeer { configuration in
            configuration.onServingThreadStart = { allocation_counter_watch_this_thread() }
            configuration.idlePollsBeforeSleep = .max
        }
        let kernelMAC = try resolveKernelMAC(peer)
        let data = [UInt8](repeating: 0x3C, count: 56)
        func ping(_ count: Int) throws {
            for sequence in 0..<count {
                try send(echoRequest(from: peer.device.macAddress, to: kernelMAC, identifier: 9, sequence: UInt16(sequence), data: data), on: peer.device)
                _ = try XCTUnwrap(receive(on: peer.device) { self.isEchoReply($0) })
            }
        }
        try ping(200)
        let before = allocation_counter_watched_total()
        let framesBefore = peer.backend.statistics.framesReceived
        try ping(1000)
        let allocations = allocation_counter_watched_total() - before
        XCTAssertEqual(peer.backend.statistics.framesReceived - framesBefore, 1000)
        XCTAssertEqual(allocations, 0, "back-end allocations while 1,000 frames went each way through the TAP")
    }

    /// A front-end that negotiated checksum offload sends an echo request with its checksum
    /// left open (NEEDS_CSUM): the header reaches the kernel, which fills it in and answers.
    /// And with GUEST_CSUM the kernel leaves its own UDP checksum to us.
    func testChecksumOffloadCrossesTheTapBothWays() throws {
        let peer = try kernelPeer(offloads: [.transmitChecksum, .receiveChecksum])
        let kernelMAC = try resolveKernelMAC(peer)
        var request = echoRequest(from: peer.device.macAddress, to: kernelMAC, identifier: 7, sequence: 1, data: Array(repeating: 0xA5, count: 100))
        request[36] = 0; request[37] = 0  // the ICMP checksum: left to the offload
        try send(request, on: peer.device, offload: VirtioNetOffload(flags: VirtioNetOffload.needsChecksum, checksumStart: 34, checksumOffset: 2))
        let reply = try XCTUnwrap(receive(on: peer.device) { self.isEchoReply($0) }, "the kernel answers only if it filled in the checksum")
        XCTAssertEqual(Array(reply.bytes[42...]), Array(repeating: 0xA5, count: 100))

        let udp = try udpFromKernel(peer)
        XCTAssertEqual(udp.offload.flags & VirtioNetOffload.needsChecksum, VirtioNetOffload.needsChecksum, "GUEST_CSUM: the kernel leaves the checksum to us")
        XCTAssertEqual(udp.offload.checksumStart, 34)
        XCTAssertEqual(udp.offload.checksumOffset, 6)
    }

    /// Without GUEST_CSUM, whatever the kernel sends arrives with its checksum done and no
    /// offload flags.
    func testWithoutChecksumOffloadKernelFramesArriveComplete() throws {
        let peer = try kernelPeer()
        _ = try resolveKernelMAC(peer)
        let udp = try udpFromKernel(peer)
        XCTAssertEqual(udp.offload, VirtioNetOffload())
        XCTAssertTrue(udpChecksumVerifies(udp.bytes))
    }

    private func udpChecksumVerifies(_ frame: [UInt8]) -> Bool {
        let udpLength = frame.count - 34
        let pseudo = kernelAddress + deviceAddress + [0, 17, UInt8(udpLength >> 8), UInt8(udpLength & 0xFF)]
        return checksum(pseudo + frame[34...]) == 0
    }

    /// A front-end with GUEST_CSUM lets the kernel leave checksums open; a datagram the kernel
    /// sends after it left is still queued that way when the next front-end, without
    /// GUEST_CSUM, connects: the back-end fills the checksum in and clears the flags.
    func testAChecksumLeftOpenForAnEarlierFrontEndIsFilledIn() throws {
        let first = try kernelPeer(offloads: [.receiveChecksum])
        let mac = macBytes(first.device.macAddress).map { String(format: "%02x", $0) }.joined(separator: ":")
        XCTAssertEqual(try udpFromKernel(first).offload.flags & VirtioNetOffload.needsChecksum, VirtioNetOffload.needsChecksum)
        first.device.stop()
        XCTAssertTrue(waitUntil { first.backend.requestTraces.count == 1 }, "the back-end saw the front-end go")
        try sendUDPFromKernel(first, to: mac)
        let second = try connectDevice(to: first.backend)
        XCTAssertFalse(second.negotiatedFeatures.contains(.netGuestCsum))
        let udp = try receiveUDP(on: second)
        XCTAssertEqual(udp.offload, VirtioNetOffload())
        XCTAssertTrue(udpChecksumVerifies(udp.bytes), "the back-end filled in the checksum")
    }

    /// Every hostile ring of `HostileFrontendTests` against a back-end in tap mode: each one
    /// closes that session with its error, and a well-behaved device then pings the kernel
    /// through the same TAP. A broken receive ring is found when the kernel sends frames into
    /// it: ten datagrams, whose unread rest a well-behaved device takes before the next case
    /// (the cases assume an untouched receive ring).
    func testHostileFrontEndsCloseOnlyTheirSessionAndTheTapKeepsWorking() throws {
        let kernel = try tapBackendInNamespace(self)
        let path = kernel.backend.configuration.socketPath
        try runIP(["-n", kernel.namespace, "neigh", "replace", "192.0.2.2", "lladdr", "02:00:00:00:00:02", "dev", kernel.tap, "nud", "permanent"])
        var tried = 0
        for item in HostileFrontendTests.ringCases {
            let before = kernel.backend.statistics.protocolErrors
            let peer = try HostileFrontend(connectingTo: path)
            try peer.startEverything()
            try item.script(peer)
            let breaksReceiveRing = item.name.contains("receive")
            if breaksReceiveRing {
                let sent = try runProgram("/usr/sbin/ip", ["netns", "exec", kernel.namespace, "bash", "-c", "for i in $(seq 10); do printf x > /dev/udp/192.0.2.2/9; done"])
                XCTAssertEqual(sent.status, 0, sent.errors)
            }
            XCTAssertTrue(peer.waitForHangUp(), "\(item.name): the back-end kept the connection open")
            XCTAssertTrue(waitUntil { kernel.backend.statistics.protocolErrors == before + 1 }, "\(item.name): not counted as a protocol error")
            let error = kernel.backend.statistics.lastError
            XCTAssertTrue(error.map(item.expected) ?? false, "\(item.name): the error was \(error.map { "\($0)" } ?? "none"), not the one expected")
            if breaksReceiveRing {
                let device = try connectDevice(to: kernel.backend)
                XCTAssertTrue(waitUntil { self.receive(on: device, within: 200) == nil }, "\(item.name): the TAP's queue never emptied")
                device.stop()
            }
            tried += 1
        }
        XCTAssertGreaterThanOrEqual(tried, 10)
        let device = try connectDevice(to: kernel.backend)
        let peer = KernelPeer(backend: kernel.backend, device: device, namespace: kernel.namespace, tap: kernel.tap)
        let kernelMAC = try resolveKernelMAC(peer)
        try send(echoRequest(from: device.macAddress, to: kernelMAC, identifier: 1, sequence: 1, data: [1, 2, 3]), on: device)
        let reply = try XCTUnwrap(receive(on: device) { self.isEchoReply($0) }, "the TAP still works after \(tried) hostile sessions")
        XCTAssertEqual(Array(reply.bytes[42...]), [1, 2, 3])
    }

    /// An administrator deletes the TAP under a running session: frames for it are dropped and
    /// counted, the session goes on (no error, no busy loop on a dead descriptor), and the loss
    /// is logged once.
    func testADeletedTapIsLoggedAndItsFramesDropped() throws {
        let log = LogCapture()
        let peer = try kernelPeer { $0.logger = log.logger() }
        _ = try resolveKernelMAC(peer)
        try runIP(["-n", peer.namespace, "link", "del", peer.tap])
        let before = peer.backend.statistics
        for _ in 0..<20 {
            try send([UInt8](repeating: 0xEE, count: 60), on: peer.device)
        }
        XCTAssertTrue(waitUntil { peer.backend.statistics.drops == before.drops + 20 }, "\(peer.backend.statistics)")
        XCTAssertTrue(waitUntil { !log.named("the TAP interface was deleted: frames for it are dropped until the back-end is restarted").isEmpty })
        XCTAssertEqual(log.named("the TAP interface was deleted: frames for it are dropped until the back-end is restarted").count, 1)
        XCTAssertEqual(peer.backend.statistics.protocolErrors, 0)
        XCTAssertEqual(peer.device.linkState, .up)
    }

    /// The TAP's MTU raised above the front-end's (1,500): a 3,042-byte frame from the kernel
    /// does not fit the receive buffers gathered for it. The kernel would silently hand over its
    /// first 2,048 bytes: the back-end sees the read reach past the buffers and drops the frame,
    /// counted; the buffers stay on the ring and the next frame arrives.
    func testAFrameLargerThanTheFrontEndsMTUIsDroppedAndCounted() throws {
        let peer = try kernelPeer()
        try runIP(["-n", peer.namespace, "link", "set", peer.tap, "mtu", "9000"])
        let mac = macBytes(peer.device.macAddress).map { String(format: "%02x", $0) }.joined(separator: ":")
        try runIP(["-n", peer.namespace, "neigh", "replace", "192.0.2.2", "lladdr", mac, "dev", peer.tap, "nud", "permanent"])
        let before = peer.backend.statistics.drops
        let sent = try runProgram("/usr/sbin/ip", ["netns", "exec", peer.namespace, "bash", "-c", "printf '%3000s' x > /dev/udp/192.0.2.2/9"])
        XCTAssertEqual(sent.status, 0, sent.errors)
        XCTAssertTrue(waitUntil { peer.backend.statistics.drops == before + 1 }, "\(peer.backend.statistics)")
        XCTAssertNil(receive(on: peer.device, within: 200) { $0.count > 1514 }, "no truncated frame reached the device")
        let udp = try udpFromKernel(peer)
        XCTAssertEqual(udp.bytes.count, 42 + "datagram for the device".utf8.count)
        XCTAssertEqual(peer.backend.statistics.drops, before + 1)
    }

    /// The README's TAP example: Scripts/tap-demo.sh runs vhost-user-backend --mode tap and the
    /// ping-responder example app, and the namespace's kernel pings it 100 times.
    func testPingResponderAnswersAHundredPingsFromTheKernel() throws {
        guard getuid() == 0 else { throw XCTSkip("a TAP and a network namespace need root; CI runs as root") }
        let script = repositoryRoot.appendingPathComponent("Scripts/tap-demo.sh").path
        let result = try runProgram(script, ["--bin", productsDirectory.path, "--count", "100"])
        let text = result.output + result.errors
        XCTAssertEqual(result.status, 0, text)
        XCTAssertTrue(text.contains("100 packets transmitted, 100 received, 0% packet loss"), text)
        XCTAssertTrue(text.contains("and 100 echo requests"), text)
        XCTAssertTrue(text.contains("0 replies found no room"), text)
        XCTAssertTrue(text.contains("drops 0  protocol errors 0"), text)
    }

    // MARK: - Frames

    private struct Frame {
        var bytes: [UInt8]
        var offload: VirtioNetOffload
    }

    /// Sends an ARP request for 192.0.2.1 and returns the MAC in the kernel's reply.
    private func resolveKernelMAC(_ peer: KernelPeer) throws -> [UInt8] {
        let mac = macBytes(peer.device.macAddress)
        var request = [UInt8](repeating: 0, count: 60)
        request[0..<6] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        request[6..<12] = mac[...]
        request[12..<22] = [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]
        request[22..<28] = mac[...]
        request[28..<32] = deviceAddress[...]
        request[38..<42] = kernelAddress[...]
        try send(request, on: peer.device)
        let reply = try XCTUnwrap(receive(on: peer.device) { frame in
            frame.count >= 42 && frame[12] == 0x08 && frame[13] == 0x06 && frame[21] == 2
        }, "the kernel answers ARP for its address")
        XCTAssertEqual(Array(reply.bytes[28..<32]), kernelAddress)
        XCTAssertEqual(Array(reply.bytes[32..<38]), mac)
        return Array(reply.bytes[22..<28])
    }

    /// Has the namespace's kernel send a UDP datagram to 192.0.2.2 (with a static neighbour
    /// entry for our MAC) and returns it as received.
    private func udpFromKernel(_ peer: KernelPeer) throws -> Frame {
        try sendUDPFromKernel(peer, to: macBytes(peer.device.macAddress).map { String(format: "%02x", $0) }.joined(separator: ":"))
        return try receiveUDP(on: peer.device)
    }

    private func sendUDPFromKernel(_ peer: KernelPeer, to mac: String) throws {
        try runIP(["-n", peer.namespace, "neigh", "replace", "192.0.2.2", "lladdr", mac, "dev", peer.tap, "nud", "permanent"])
        let result = try runProgram("/usr/sbin/ip", ["netns", "exec", peer.namespace, "bash", "-c", "printf 'datagram for the device' > /dev/udp/192.0.2.2/9"])
        XCTAssertEqual(result.status, 0, result.errors)
    }

    private func receiveUDP(on device: VirtioUserDevice) throws -> Frame {
        let frame = try XCTUnwrap(receive(on: device) { frame in
            frame.count >= 42 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 17
        }, "the kernel's UDP datagram arrives")
        XCTAssertEqual(Array(frame.bytes[42...]), Array("datagram for the device".utf8))
        return frame
    }

    private func echoRequest(from source: MACAddress, to destination: [UInt8], identifier: UInt16, sequence: UInt16, data: [UInt8]) -> [UInt8] {
        let ipLength = 20 + 8 + data.count
        var frame = destination + macBytes(source) + [0x08, 0x00]
        frame += [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xFF), 0, 0, 0x40, 0, 64, 1, 0, 0] + deviceAddress + kernelAddress
        let ipSum = checksum(frame[14..<34])
        frame[24] = UInt8(ipSum >> 8); frame[25] = UInt8(ipSum & 0xFF)
        frame += [8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xFF), UInt8(sequence >> 8), UInt8(sequence & 0xFF)] + data
        let icmpSum = checksum(frame[34...])
        frame[36] = UInt8(icmpSum >> 8); frame[37] = UInt8(icmpSum & 0xFF)
        return frame
    }

    private func isEchoReply(_ frame: UnsafeRawBufferPointer) -> Bool {
        frame.count >= 42 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 1 && frame[34] == 0
    }

    private func send(_ bytes: [UInt8], on device: VirtioUserDevice, offload: VirtioNetOffload? = nil) throws {
        let tx = PacketBurst(capacity: 1)
        XCTAssertEqual(device.allocate(into: tx, count: 1), 1)
        var packet = tx[0]
        bytes.withUnsafeBytes { packet.data.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
        packet.length = bytes.count
        if let offload { packet.setOffload(offload) }
        tx[0] = packet
        guard waitUntil({ device.transmit(tx) == 1 }) else {
            device.release(tx)
            throw TestFailure("the frame could not be transmitted")
        }
    }

    /// The first frame within `milliseconds` that `matches` (others, like the kernel's IPv6 chatter, are
    /// skipped).
    private func receive(
        on device: VirtioUserDevice, within milliseconds: UInt64 = 5000, matching matches: (UnsafeRawBufferPointer) -> Bool = { _ in true }
    ) -> Frame? {
        let rx = PacketBurst(capacity: 32)
        let deadline = MonotonicClock.nanoseconds() + milliseconds * 1_000_000
        while MonotonicClock.nanoseconds() < deadline {
            guard device.receive(into: rx, timeoutMilliseconds: 100) > 0 else { continue }
            defer { device.release(rx) }
            for i in 0..<rx.count where rx[i].segments == 1 {
                let bytes = UnsafeRawBufferPointer(rx[i].bytes)
                if matches(bytes) { return Frame(bytes: Array(bytes), offload: rx[i].offload) }
            }
        }
        return nil
    }

    private func macBytes(_ mac: MACAddress) -> [UInt8] {
        withUnsafeBytes(of: mac.bytes) { Array($0) }
    }

    private func checksum<C: Collection>(_ bytes: C) -> UInt16 where C.Element == UInt8 {
        var sum: UInt32 = 0
        var high = true
        for byte in bytes {
            sum += high ? UInt32(byte) << 8 : UInt32(byte)
            high.toggle()
        }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
