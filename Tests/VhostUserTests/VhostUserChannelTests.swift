#if canImport(Glibc)
import Glibc
#endif
import VhostUser
import VirtioCore
import XCTest

/// Framing over a stream socket: whole messages, partial reads, a closed or silent peer.
final class VhostUserChannelTests: XCTestCase {
    func testSendAndReceiveTypedMessages() throws {
        let (a, b) = try UnixSocket.pair()
        let sender = VhostUserChannel(socket: a), receiver = VhostUserChannel(socket: b)
        for (message, size) in MessageSamples.all where message.descriptorCount == 0 {
            try sender.send(message)
            let frame = try receiver.receive(timeoutMilliseconds: 10_000)
            XCTAssertEqual(frame.header, VhostUserHeader(request: message.request, flags: VhostUserHeader.version, size: UInt32(size)))
            XCTAssertTrue(frame.descriptors.isEmpty)
            XCTAssertEqual(try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: 0), message)
        }
    }

    func testBackToBackMessagesAreSplitCorrectly() throws {
        let (a, b) = try UnixSocket.pair()
        let sender = VhostUserChannel(socket: a), receiver = VhostUserChannel(socket: b)
        let messages: [VhostUserMessage] = [
            .setOwner, .setVringAddr(MessageSamples.address), .getFeatures,
            .setVringNum(VringState(index: 1, num: 1024)), .getStatus,
        ]
        for message in messages { try sender.send(message) }
        for message in messages {
            let frame = try receiver.receive(timeoutMilliseconds: 10_000)
            XCTAssertEqual(try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: 0), message)
        }
        XCTAssertEqual(try Poll.waitReadable(b.raw, milliseconds: 0), .timedOut, "nothing left over")
    }

    func testFlags() throws {
        let (a, b) = try UnixSocket.pair()
        let sender = VhostUserChannel(socket: a), receiver = VhostUserChannel(socket: b)
        try sender.send(.setOwner, needReply: true)
        let asked = try receiver.receive(timeoutMilliseconds: 10_000).header
        XCTAssertTrue(asked.needsReply)
        XCTAssertFalse(asked.isReply)
        XCTAssertEqual(asked.flags, VhostUserHeader.version | VhostUserHeader.needReplyFlag)

        try receiver.reply(to: .getFeatures, payload: littleEndianBytes(UInt64(0x1234)))
        let reply = try sender.receive(timeoutMilliseconds: 10_000)
        XCTAssertEqual(reply.header, VhostUserHeader(request: .getFeatures, flags: VhostUserHeader.version | VhostUserHeader.replyFlag, size: 8))
        XCTAssertEqual(reply.payload, littleEndianBytes(UInt64(0x1234)))

        // The version bits are always set by the channel.
        try sender.send(request: .setOwner, flags: 0, payload: [])
        XCTAssertEqual(try receiver.receive(timeoutMilliseconds: 10_000).header.flags, VhostUserHeader.version)
    }

    func testLargestPayloadPasses() throws {
        let (a, b) = try UnixSocket.pair()
        let sender = VhostUserChannel(socket: a), receiver = VhostUserChannel(socket: b)
        let payload = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try sender.send(request: .setConfig, flags: 0, payload: payload)
        let frame = try receiver.receive(timeoutMilliseconds: 10_000)
        XCTAssertEqual(frame.header.size, 4096)
        XCTAssertEqual(frame.payload, payload)
    }

    func testPartialReadsAssembleOneMessage() throws {
        let pair = try SocketPair()
        let ours = pair.ours
        let result = LockedBox<Result<VhostUserFrame, VirtioError>>()
        let thread = try DedicatedThread(name: "vu-receiver") {
            let channel = VhostUserChannel(socket: ours)
            result.set(Result { () throws(VirtioError) in try channel.receive(timeoutMilliseconds: 30_000) })
        }
        let message = VhostUserMessage.setVringAddr(MessageSamples.address)
        let payload = message.encodePayload()
        let bytes = rawHeader(request: 9, flags: 1, size: UInt32(payload.count)) + payload
        // One byte at a time; each is written only after the receiver has read the previous one,
        // so the channel really sees 52 separate chunks.
        for byte in bytes {
            rawWrite([byte], to: pair.peer)
            guard waitUntilConsumed(ours) else { break }
        }
        pair.closePeer()  // unblocks the receiver if something went wrong above
        thread.join()
        let frame = try XCTUnwrap(result.value).get()
        XCTAssertEqual(frame.header.request, .setVringAddr)
        XCTAssertEqual(frame.payload, payload)
        XCTAssertEqual(try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: 0), message)
    }

    func testPeerClosingBeforeAMessageIsPeerGone() throws {
        let pair = try SocketPair()
        pair.closePeer()
        let channel = VhostUserChannel(socket: pair.ours)
        assertThrowsVirtioError(.connection) { () throws(VirtioError) in try channel.receive(timeoutMilliseconds: 10_000) }
    }

    func testPeerClosingInTheMiddleOfAHeaderIsPeerGone() throws {
        let pair = try SocketPair()
        rawWrite(Array(rawHeader(request: 1, flags: 1, size: 0).prefix(5)), to: pair.peer)
        pair.closePeer()
        let channel = VhostUserChannel(socket: pair.ours)
        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in try channel.receive(timeoutMilliseconds: 10_000) }
        XCTAssertEqual(error, .connection(.closedByPeer(during: "in the middle of a message header", errno: nil)))
    }

    func testPeerClosingInTheMiddleOfAPayloadIsPeerGone() throws {
        let pair = try SocketPair()
        rawWrite(rawHeader(request: 2, flags: 1, size: 8) + [1, 2, 3], to: pair.peer)
        pair.closePeer()
        let channel = VhostUserChannel(socket: pair.ours)
        let error = assertThrowsVirtioError(.connection) { () throws(VirtioError) in try channel.receive(timeoutMilliseconds: 10_000) }
        XCTAssertEqual(error, .connection(.closedByPeer(during: "in the middle of the SET_FEATURES payload", errno: nil)))
    }

    func testSendingToAClosedPeerIsPeerGone() throws {
        let pair = try SocketPair()
        pair.closePeer()
        let channel = VhostUserChannel(socket: pair.ours)
        assertThrowsVirtioError(.connection) { () throws(VirtioError) in try channel.send(.setOwner) }
    }

    func testSilentPeerTimesOut() throws {
        let (a, b) = try UnixSocket.pair()
        _ = b
        let channel = VhostUserChannel(socket: a)
        let start = MonotonicClock.nanoseconds()
        assertThrowsVirtioError(.connection) { () throws(VirtioError) in try channel.receive(timeoutMilliseconds: 100) }
        let elapsed = (MonotonicClock.nanoseconds() - start) / 1_000_000
        XCTAssertGreaterThanOrEqual(elapsed, 100)
        XCTAssertLessThan(elapsed, 5_000)
    }

    func testPeerStoppingInTheMiddleOfAMessageTimesOut() throws {
        let (a, b) = try UnixSocket.pair()
        rawWrite(rawHeader(request: 2, flags: 1, size: 8) + [1, 2], to: b)
        let channel = VhostUserChannel(socket: a)
        assertThrowsVirtioError(.connection) { () throws(VirtioError) in try channel.receive(timeoutMilliseconds: 100) }
    }

    func testZeroTimeoutWithNothingToReadTimesOut() throws {
        let (a, b) = try UnixSocket.pair()
        _ = b
        assertThrowsVirtioError(.connection) { () throws(VirtioError) in try VhostUserChannel(socket: a).receive(timeoutMilliseconds: 0) }
    }

    /// A zero timeout reads a message that is already there (it once timed out regardless).
    func testZeroTimeoutReadsAMessageAlreadyWaiting() throws {
        let (a, b) = try UnixSocket.pair()
        try VhostUserChannel(socket: a).send(.setOwner)
        XCTAssertEqual(try Poll.waitReadable(b.raw, milliseconds: 10_000), .readable)
        let frame = try VhostUserChannel(socket: b).receive(timeoutMilliseconds: 0)
        XCTAssertEqual(frame.header.request, .setOwner)
    }

    func testBadHeadersOnTheWireAreProtocolViolations() throws {
        let cases: [(String, [UInt8])] = [
            ("version 2", rawHeader(request: 1, flags: 2, size: 0)),
            ("version 0", rawHeader(request: 1, flags: 0, size: 0)),
            ("size 4097", rawHeader(request: 5, flags: 1, size: 4097)),
            ("size 1 GiB", rawHeader(request: 5, flags: 1, size: 1 << 30)),
        ]
        for (name, bytes) in cases {
            let (a, b) = try UnixSocket.pair()
            rawWrite(bytes, to: b)
            assertThrowsVirtioError(.peerProtocol, name) { () throws(VirtioError) in
                try VhostUserChannel(socket: a).receive(timeoutMilliseconds: 10_000)
            }
        }
    }
}
