#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Malformed answers and used-ring entries from a back-end. For each one our device must name
/// the problem and drop the session (or, for a bad receive length, the frame), with every
/// buffer back in its pool; the process goes on and the next, well-behaved back-end works.
final class HostileBackendTests: XCTestCase {
    private func configuration(_ path: String) -> VirtioUserDevice.Configuration {
        hostileBackendDeviceConfiguration(path)
    }

    private static func raw(request: UInt32, flags: UInt32, size: UInt32, payload: [UInt8] = [], descriptors: [Int32] = [], on channel: VhostUserChannel) throws {
        try sendRaw(rawMessage(request: request, flags: flags, size: size, payload: payload), descriptors: descriptors, on: channel.socket.raw)
    }

    private static let one = withUnsafeBytes(of: UInt64(1).littleEndian) { Array($0) }

    func testMalformedControlRepliesFailTheStartCleanly() throws {
        let notifier = try EventNotifier()
        let fd = notifier.descriptor.raw
        let cases: [(String, VirtioError, VhostUserRequest, @Sendable (VhostUserChannel) throws -> Void)] = [
            ("reply with another request's code", .peerProtocol(.badReply(to: "GET_FEATURES", problem: "the back-end sent GET_PROTOCOL_FEATURES instead")), .getFeatures, {
                try $0.reply(to: .getProtocolFeatures, payload: Self.one)
            }),
            ("reply without the reply flag", .peerProtocol(.badReply(to: "GET_FEATURES", problem: "it lacks the reply flag")), .getFeatures, {
                try $0.send(request: .getFeatures, flags: 0, payload: Self.one)
            }),
            ("reply of 4 bytes", .peerProtocol(.badReply(to: "GET_FEATURES", problem: "it has 4 payload bytes; 8 expected")), .getFeatures, {
                try $0.reply(to: .getFeatures, payload: [1, 0, 0, 0])
            }),
            ("reply carrying an fd", .peerProtocol(.badReply(to: "GET_FEATURES", problem: "it carried 1 unexpected file descriptor(s)")), .getFeatures, {
                try $0.send(request: .getFeatures, flags: VhostUserHeader.replyFlag, payload: Self.one, descriptors: [fd])
            }),
            ("reply with 20 fds", .peerProtocol(.badFileDescriptors(request: "a message header", problem: "more file descriptors attached than any message may carry")), .getFeatures, {
                try Self.raw(request: 1, flags: 1 | 4, size: 8, payload: Self.one, descriptors: Array(repeating: fd, count: 20), on: $0)
            }),
            ("reply header of protocol version 2", .peerProtocol(.malformedMessage(request: "GET_FEATURES", problem: "protocol version 2; only version 1 exists")), .getFeatures, {
                try Self.raw(request: 1, flags: 2 | 4, size: 8, payload: Self.one, on: $0)
            }),
            ("reply announcing 1 MiB", .peerProtocol(.malformedMessage(request: "GET_FEATURES", problem: "a 1048576-byte payload announced; the limit is \(VhostUserHeader.maximumPayload)")), .getFeatures, {
                try Self.raw(request: 1, flags: 1 | 4, size: 1 << 20, on: $0)
            }),
            ("no reply at all", .connection(.timedOut(waitingFor: "a message header")), .getFeatures, { _ in }),
            ("no VIRTIO_F_VERSION_1 offered", .negotiation(.missingFeature(feature: "VIRTIO_F_VERSION_1, as legacy virtio is not supported", offered: VirtioFeatures(rawValue: 1 << 5))), .getFeatures, {
                try $0.reply(to: .getFeatures, payload: withUnsafeBytes(of: UInt64(1 << 5).littleEndian) { Array($0) })
            }),
            // (Not later: after GET_FEATURES the device waits for no answer before its rings
            // run, so a close there shows as the link going down, not as a failed start.)
            ("connection closed instead of a reply", .connection(.closedByPeer(during: "", errno: nil)), .getFeatures, {
                _ = shutdown($0.socket.raw, Int32(SHUT_RDWR))
            }),
        ]
        for (name, expected, request, answer) in cases {
            let path = try makeSocketPath(self)
            let peer = try HostileBackend(path: path, takeover: .control(request, answer))
            let device = try VirtioUserDevice(configuration: configuration(path))
            do {
                try device.start()
                XCTFail("\(name): the device started")
            } catch {
                XCTAssertEqual(error, expected, name)
            }
            device.stop()
            peer.join()
            XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "\(name): buffers lost")
        }
        try assertWellBehavedBackendWorks()
    }

    func testMalformedUsedEntriesStopTheSessionWithEveryBufferBack() throws {
        // The device sends two frames first (descriptors 0 and 1: its free stack hands them out
        // in order); the script answers with a bad used ring; then one burst larger than the
        // free descriptors makes the device reclaim (it does so lazily) and meet the entry.
        let cases: [(String, @Sendable (VirtioUserDevice.LinkDownReason) -> Bool, @Sendable (HostileBackend.Session) throws -> Void)] = [
            ("used index jumping past what was made available", { $0 == .failed(.ringViolation(.usedIndexJump(count: 300, outstanding: 2))) }, { session in
                _ = session.waitForAvailable(ring: 1, count: 2)
                session.complete(ring: 1, slot: 0, id: 0, length: 0, usedIndex: 300)
            }),
            ("used entry naming a descriptor not in flight", { $0 == .failed(.ringViolation(.usedIdNotInFlight(id: 5, slot: nil))) }, { session in
                _ = session.waitForAvailable(ring: 1, count: 2)
                session.complete(ring: 1, slot: 0, id: 5, length: 0, usedIndex: 1)
            }),
            ("used entry naming a descriptor outside the table", { $0 == .failed(.ringViolation(.usedIdNotInFlight(id: 5000, slot: nil))) }, { session in
                _ = session.waitForAvailable(ring: 1, count: 2)
                session.complete(ring: 1, slot: 0, id: 5000, length: 0, usedIndex: 1)
            }),
            ("the same descriptor completed twice", { $0 == .failed(.ringViolation(.usedIdNotInFlight(id: 0, slot: nil))) }, { session in
                let heads = session.waitForAvailable(ring: 1, count: 2)
                session.complete(ring: 1, slot: 0, id: UInt32(heads[0]), length: 0, usedIndex: 0)
                session.complete(ring: 1, slot: 1, id: UInt32(heads[0]), length: 0, usedIndex: 2)
            }),
            ("receive used index jumping", { if case .failed(.ringViolation(.usedIndexJump(count: 2000, _))) = $0 { true } else { false } }, { session in
                _ = session.waitForAvailable(ring: 1, count: 2)
                session.complete(ring: 0, slot: 0, id: 0, length: 0, usedIndex: 2000)
            }),
        ]
        for (name, expected, script) in cases {
            let path = try makeSocketPath(self)
            let peer = try HostileBackend(path: path, takeover: .rings(script))
            let device = try VirtioUserDevice(configuration: configuration(path))
            try device.start()
            let first = PacketBurst(capacity: 2)
            fillWithFrames(first, from: device)
            XCTAssertEqual(device.transmit(first), 2, name)
            XCTAssertTrue(waitUntil { peer.ringScriptFinished }, "\(name): the script did not run")
            let big = PacketBurst(capacity: 300)
            fillWithFrames(big, from: device)
            device.transmit(big)
            let received = PacketBurst(capacity: 32)
            device.receive(into: received)
            device.release(received)
            device.release(big)
            if case .down(let reason) = device.linkState {
                XCTAssertTrue(expected(reason), "\(name): \"\(reason)\" is not the violation expected")
            } else {
                XCTFail("\(name): the link stayed up")
            }
            device.stop()
            peer.join()
            let statistics = device.statistics
            XCTAssertEqual(device.availableBuffers(), statistics.poolSize, "\(name): buffers lost")
            XCTAssertEqual(statistics.tx.errors + statistics.rx.errors, 1, "\(name): the violation is counted once")
            // Frames the back-end never properly completed count as dropped: none vanish.
            XCTAssertEqual(statistics.tx.packets, statistics.tx.completed + statistics.tx.drops, "\(name): transmit balance")
        }
        try assertWellBehavedBackendWorks()
    }

    /// A used length longer than its buffer, or shorter than the header: that frame goes,
    /// counted as a receive error (Linux: rx_length_errors; the old device counted a drop, as if
    /// nothing were wrong) and logged once for the session with the length; the next arrives.
    func testReceiveLengthsBeyondTheBufferDropOnlyThatFrame() throws {
        for (name, length) in [("longer than the buffer", UInt32(12 + 2048 + 1)), ("shorter than the header", UInt32(3))] {
            let path = try makeSocketPath(self)
            let logs = LogCapture()
            let peer = try HostileBackend(path: path, takeover: .rings { session in
                let heads = session.waitForAvailable(ring: 0, count: 2)
                session.complete(ring: 0, slot: 0, id: UInt32(heads[0]), length: length, usedIndex: 1)
                session.complete(ring: 0, slot: 1, id: UInt32(heads[1]), length: 12 + 60, usedIndex: 2)
            })
            var withLogs = configuration(path)
            withLogs.logger = logs.logger()
            let device = try VirtioUserDevice(configuration: withLogs)
            try device.start()
            let received = PacketBurst(capacity: 32)
            XCTAssertTrue(waitUntil { device.receive(into: received); return received.count == 1 }, name)
            XCTAssertEqual(received.count, 1, name)
            XCTAssertEqual(received.isEmpty ? -1 : received[0].length, 60, name)
            device.release(received)
            XCTAssertEqual(device.statistics.rx.errors, 1, name)
            XCTAssertEqual(device.statistics.rx.drops, 0, name)
            XCTAssertEqual(device.linkState, .up, name)
            device.stop()
            peer.join()
            let logged = logs.named("receive length error")
            XCTAssertEqual(logged.count, 1, name)
            XCTAssertTrue(logged.first?.metadata["reason"]?.contains("reported \(length) bytes") ?? false, "\(name): \(logged)")
            XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "\(name): buffers lost")
        }
    }

    /// Mergeable receive buffers: a `num_buffers` of 0, or more than the buffers posted, stops
    /// the ring; a frame with one bad length among its buffers is dropped whole, and the next
    /// frame still arrives.
    func testBadNumBuffersStopTheRingAndABadSegmentDropsItsFrame() throws {
        for (name, value) in [("num_buffers 0", UInt16(0)), ("num_buffers 500", UInt16(500))] {
            let path = try makeSocketPath(self)
            let peer = try HostileBackend(path: path, features: [.version1, .netMergeableRxBuffers], takeover: .rings { session in
                let heads = session.waitForAvailable(ring: 0, count: 1)
                session.writeNumBuffers(head: heads[0], value)
                // A full first buffer: only that can start a frame of several (§5.1.6.4.2).
                session.complete(ring: 0, slot: 0, id: UInt32(heads[0]), length: 12 + 2048, usedIndex: 1)
            })
            let device = try VirtioUserDevice(configuration: configuration(path))
            try device.start()
            XCTAssertTrue(device.negotiatedFeatures.contains(.netMergeableRxBuffers))
            let received = PacketBurst(capacity: 32)
            XCTAssertTrue(waitUntil { device.receive(into: received); return device.linkState != .up }, name)
            XCTAssertTrue(received.isEmpty, name)
            if case .down(.failed(.ringViolation(.numBuffers(let found, _)))) = device.linkState {
                XCTAssertEqual(found, Int(value), name)
            } else {
                XCTFail("\(name): the link is \(device.linkState), not down for num_buffers")
            }
            device.stop()
            peer.join()
            XCTAssertEqual(device.statistics.rx.errors, 1, name)
            XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "\(name): buffers lost")
        }

        let path = try makeSocketPath(self)
        let peer = try HostileBackend(path: path, features: [.version1, .netMergeableRxBuffers], takeover: .rings { session in
            let heads = session.waitForAvailable(ring: 0, count: 3)
            session.writeNumBuffers(head: heads[0], 2)
            session.complete(ring: 0, slot: 0, id: UInt32(heads[0]), length: 12 + 2048, usedIndex: 1)
            // One byte more than the second buffer holds.
            session.complete(ring: 0, slot: 1, id: UInt32(heads[1]), length: 12 + 2048 + 1, usedIndex: 2)
            session.writeNumBuffers(head: heads[2], 1)
            session.complete(ring: 0, slot: 2, id: UInt32(heads[2]), length: 12 + 60, usedIndex: 3)
        })
        let device = try VirtioUserDevice(configuration: configuration(path))
        try device.start()
        let received = PacketBurst(capacity: 32)
        XCTAssertTrue(waitUntil { device.receive(into: received); return received.count == 1 })
        XCTAssertEqual(received.isEmpty ? -1 : received[0].length, 60)
        XCTAssertEqual(received.isEmpty ? 0 : received[0].segments, 1)
        device.release(received)
        XCTAssertEqual(device.statistics.rx.errors, 1, "the two-buffer frame is dropped whole, a receive error")
        XCTAssertEqual(device.statistics.rx.drops, 0)
        XCTAssertEqual(device.linkState, .up)
        device.stop()
        peer.join()
        XCTAssertEqual(device.availableBuffers(), device.statistics.poolSize, "buffers lost")
    }

    private func assertWellBehavedBackendWorks() throws {
        let backend = try startBackend(self)
        let device = try VirtioUserDevice(configuration: .init(socketPath: backend.configuration.socketPath))
        try device.start()
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: 21), total: 2000).intact, 2000)
        device.stop()
    }
}
