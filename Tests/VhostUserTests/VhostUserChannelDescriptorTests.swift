#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VhostUser
import VirtioCore
import XCTest

/// File descriptors travelling with messages (SCM_RIGHTS), and the limits on them.
final class VhostUserChannelDescriptorTests: XCTestCase {
    func testKickDescriptorArrivesAndWorks() throws {
        let (a, b) = try UnixSocket.pair()
        let sender = VhostUserChannel(socket: a), receiver = VhostUserChannel(socket: b)
        let original = try EventNotifier()
        let message = VhostUserMessage.setVringKick(VringFile(index: 1, hasDescriptor: true))
        try sender.send(message, descriptors: [original.descriptor.raw])

        let frame = try receiver.receive(timeoutMilliseconds: 10_000)
        XCTAssertEqual(frame.descriptors.count, 1)
        XCTAssertEqual(try VhostUserMessage.decode(header: frame.header, payload: frame.payload,
                                                   descriptorCount: frame.descriptors.count), message)
        let received = try XCTUnwrap(frame.descriptors.first)
        XCTAssertNotEqual(received.raw, original.descriptor.raw, "the kernel installs a new descriptor")
        XCTAssertNotEqual(fcntl(received.raw, F_GETFD) & FD_CLOEXEC, 0, "received fds are close-on-exec")

        let adopted = EventNotifier(adopting: received)
        try adopted.signal()
        XCTAssertEqual(original.drain(), 1, "the received fd is the same eventfd")
        try original.signal()
        XCTAssertEqual(adopted.drain(), 1)
    }

    func testMemTableWithEightDescriptors() throws {
        let (a, b) = try UnixSocket.pair()
        let sender = VhostUserChannel(socket: a), receiver = VhostUserChannel(socket: b)
        let regions = try (0..<8).map { _ in try SharedMemoryRegion(minimumSize: 4096) }
        for (i, region) in regions.enumerated() { region.base.storeBytes(of: UInt8(0xA0 + i), as: UInt8.self) }
        let message = VhostUserMessage.setMemTable(MessageSamples.regions(8))
        try sender.send(message, descriptors: regions.map { $0.descriptor.raw })

        let frame = try receiver.receive(timeoutMilliseconds: 10_000)
        XCTAssertEqual(frame.descriptors.count, 8)
        XCTAssertEqual(try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: 8), message)
        // Each received fd maps the memory of the region at the same position.
        for (i, descriptor) in frame.descriptors.enumerated() {
            XCTAssertEqual(cvs_file_size(descriptor.raw), 4096)
            guard let mapped = cvs_mmap_shared(descriptor.raw, 4096, 0) else { XCTFail("mmap of fd \(i)"); continue }
            XCTAssertEqual(mapped.load(as: UInt8.self), UInt8(0xA0 + i), "fd order must be preserved")
            _ = cvs_munmap(mapped, 4096)
        }
    }

    func testSixteenDescriptorsPass() throws {
        let (a, b) = try UnixSocket.pair()
        let notifiers = try (0..<16).map { _ in try EventNotifier() }
        try VhostUserChannel(socket: a).send(request: .setOwner, flags: 0, payload: [],
                                             descriptors: notifiers.map { $0.descriptor.raw })
        let frame = try VhostUserChannel(socket: b).receive(timeoutMilliseconds: 10_000)
        XCTAssertEqual(frame.descriptors.count, 16)
        // A message carrying fds where none are expected is refused by decode.
        assertThrowsVirtioError(.peerProtocol) { () throws(VirtioError) in
            try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: frame.descriptors.count)
        }
    }

    func testMoreThanSixteenDescriptorsAreNotSent() throws {
        let (a, b) = try UnixSocket.pair()
        let notifiers = try (0..<17).map { _ in try EventNotifier() }
        assertThrowsVirtioError(.configuration) { () throws(VirtioError) in
            try VhostUserChannel(socket: a).send(request: .setOwner, flags: 0, payload: [],
                                                 descriptors: notifiers.map { $0.descriptor.raw })
        }
        XCTAssertEqual(try Poll.waitReadable(b.raw, milliseconds: 0), .timedOut, "nothing may have been sent")
    }

    func testMoreThanSixteenReceivedDescriptorsAreRefused() throws {
        let (a, b) = try UnixSocket.pair()
        let notifier = try EventNotifier()
        let fds = [Int32](repeating: notifier.descriptor.raw, count: 20)
        let bytes = rawHeader(request: 3, flags: 1, size: 0)
        XCTAssertEqual(rawSendWithDescriptors(bytes, fds: fds, to: a), bytes.count, "sendmsg with 20 fds: errno \(errno)")
        assertThrowsVirtioError(.peerProtocol) { () throws(VirtioError) in
            try VhostUserChannel(socket: b).receive(timeoutMilliseconds: 10_000)
        }
    }

    func testUnexpectedDescriptorIsRefusedByDecode() throws {
        let (a, b) = try UnixSocket.pair()
        let notifier = try EventNotifier()
        try VhostUserChannel(socket: a).send(.setFeatures([.version1]), descriptors: [notifier.descriptor.raw])
        let frame = try VhostUserChannel(socket: b).receive(timeoutMilliseconds: 10_000)
        XCTAssertEqual(frame.descriptors.count, 1)
        assertThrowsVirtioError(.peerProtocol) { () throws(VirtioError) in
            try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: frame.descriptors.count)
        }
    }

    func testMissingDescriptorIsRefusedByDecode() throws {
        let (a, b) = try UnixSocket.pair()
        // The front-end claims an fd (no-fd flag clear) but attaches none.
        try VhostUserChannel(socket: a).send(.setVringCall(VringFile(index: 0, hasDescriptor: true)))
        let frame = try VhostUserChannel(socket: b).receive(timeoutMilliseconds: 10_000)
        XCTAssertTrue(frame.descriptors.isEmpty)
        assertThrowsVirtioError(.peerProtocol) { () throws(VirtioError) in
            try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: frame.descriptors.count)
        }
    }

    func testDescriptorOnTheFirstOfManyChunksIsKept() throws {
        let pair = try SocketPair()
        let ours = pair.ours
        let result = LockedBox<Result<VhostUserFrame, VirtioError>>()
        let thread = try DedicatedThread(name: "vu-receiver") {
            let channel = VhostUserChannel(socket: ours)
            result.set(Result { () throws(VirtioError) in try channel.receive(timeoutMilliseconds: 30_000) })
        }
        let original = try EventNotifier()
        let message = VhostUserMessage.setVringCall(VringFile(index: 2, hasDescriptor: true))
        let bytes = rawHeader(request: 13, flags: 1, size: 8) + message.encodePayload()
        // The first byte carries the fd; the rest follow one by one.
        var fd = original.descriptor.raw
        let sent = bytes.withUnsafeBytes { cvs_send_with_fds(pair.peer.raw, $0.baseAddress, 1, &fd, 1) }
        XCTAssertEqual(sent, 1)
        if waitUntilConsumed(ours) {
            for byte in bytes.dropFirst() {
                rawWrite([byte], to: pair.peer)
                guard waitUntilConsumed(ours) else { break }
            }
        }
        pair.closePeer()  // unblocks the receiver if something went wrong above
        thread.join()
        let frame = try XCTUnwrap(result.value).get()
        XCTAssertEqual(frame.descriptors.count, 1)
        XCTAssertEqual(try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: 1), message)
        try EventNotifier(adopting: frame.descriptors[0]).signal()
        XCTAssertEqual(original.drain(), 1)
    }
}
