import CVirtioShim
import VhostUser
import VirtioCore
import XCTest

/// The front-end session against a well-behaved scripted back-end, without REPLY_ACK.
final class VhostUserFrontendTests: XCTestCase {
    func testQueriesReturnTheScriptedValues() throws {
        let features: VirtioFeatures = [.version1, .netMAC, .vhostUserProtocolFeatures, .netMergeableRxBuffers]
        let result = try runScripted(frontend: { (f) throws(VirtioError) in
            (try f.getFeatures(), try f.getProtocolFeatures(), try f.getQueueNum(),
             try f.getVringBase(index: 1), try f.getStatus())
        }, backend: { channel in
            try channel.expect(.getFeatures)
            try channel.reply(to: .getFeatures, value: features.rawValue)
            try channel.expect(.getProtocolFeatures)
            try channel.reply(to: .getProtocolFeatures, value: 0x1_0009)
            try channel.expect(.getQueueNum)
            try channel.reply(to: .getQueueNum, value: 4)
            try channel.expect(.getVringBase(VringState(index: 1, num: 0)))
            try channel.reply(to: .getVringBase, payload: littleEndianBytes(UInt32(1)) + littleEndianBytes(UInt32(65501)))
            try channel.expect(.getStatus)
            try channel.reply(to: .getStatus, value: 0x0F)
        })
        let values = try result.get()
        XCTAssertEqual(values.0, features)
        XCTAssertEqual(values.1, [.multiqueue, .replyAck, .status])
        XCTAssertEqual(values.2, 4)
        XCTAssertEqual(values.3, 65501)
        XCTAssertEqual(values.4, [.acknowledge, .driver, .driverOK, .featuresOK])
    }

    func testSetCallsWithoutReplyAckDoNotWait() throws {
        let memory = try SharedMemoryRegion(minimumSize: 1 << 16)
        let kick = try EventNotifier(), call = try EventNotifier()
        let region = MemoryRegionDescriptor(guestPhysicalAddress: UInt64(UInt(bitPattern: memory.base)),
                                            size: UInt64(memory.size), userAddress: UInt64(UInt(bitPattern: memory.base)),
                                            mmapOffset: 0)
        let result = try runScripted(frontend: { (f) throws(VirtioError) in
            try f.setOwner()
            try f.setFeatures([.version1])
            try f.setMemTable([region], descriptors: [memory.descriptor.raw])
            try f.setVringNum(index: 0, size: 256)
            try f.setVringBase(index: 0, base: 7)
            try f.setVringAddr(MessageSamples.address)
            try f.setVringKick(index: 0, notifier: kick)
            try f.setVringCall(index: 0, notifier: call)
            try f.setVringEnable(index: 0, enabled: true)
            try f.setStatus([.acknowledge, .driver])
            try f.resetOwner()
            return f.sentRequests
        }, backend: { channel in
            try channel.expect(.setOwner)
            try channel.expect(.setFeatures([.version1]))
            let table = try channel.expect(.setMemTable([region]))
            XCTAssertEqual(table.descriptors.count, 1)
            if let fd = table.descriptors.first { XCTAssertEqual(cvs_file_size(fd.raw), Int64(memory.size)) }
            try channel.expect(.setVringNum(VringState(index: 0, num: 256)))
            try channel.expect(.setVringBase(VringState(index: 0, num: 7)))
            try channel.expect(.setVringAddr(MessageSamples.address))
            let kickFrame = try channel.expect(.setVringKick(VringFile(index: 0, hasDescriptor: true)))
            let callFrame = try channel.expect(.setVringCall(VringFile(index: 0, hasDescriptor: true)))
            try channel.expect(.setVringEnable(VringState(index: 0, num: 1)))
            try channel.expect(.setStatus(3))
            try channel.expect(.resetOwner)
            // The received notifiers are the front-end's eventfds.
            try EventNotifier(adopting: kickFrame.descriptors[0]).signal()
            XCTAssertEqual(kick.drain(), 1)
            XCTAssertEqual(call.drain(), 0)
            try EventNotifier(adopting: callFrame.descriptors[0]).signal()
            XCTAssertEqual(call.drain(), 1)
            channel.expectFrontendDone()
        })
        XCTAssertEqual(try result.get(), [
            .setOwner, .setFeatures, .setMemTable, .setVringNum, .setVringBase, .setVringAddr,
            .setVringKick, .setVringCall, .setVringEnable, .setStatus, .resetOwner,
        ])
    }

    func testSetMemTableChecksItsArgumentsBeforeSending() throws {
        let (a, b) = try UnixSocket.pair()
        let frontend = VhostUserFrontend(socket: a)
        let nine = MessageSamples.regions(8) + MessageSamples.regions(1)
        for (regions, fds) in [([MemoryRegionDescriptor](), [Int32]()), (MessageSamples.regions(2), [Int32(0)]),
                               (nine, [Int32](repeating: 0, count: 9))] {
            assertThrowsVirtioError(.configuration, "\(regions.count) regions, \(fds.count) fds") { () throws(VirtioError) in
                try frontend.setMemTable(regions, descriptors: fds)
            }
        }
        XCTAssertTrue(frontend.sentRequests.isEmpty)
        XCTAssertEqual(try Poll.waitReadable(b.raw, milliseconds: 0), .timedOut, "nothing may have been sent")
    }

    /// Kick/call carry the ring index in 8 bits; 256 once spilled into the no-fd flag.
    func testKickAndCallRefuseRingIndicesAbove255() throws {
        let (a, b) = try UnixSocket.pair()
        let frontend = VhostUserFrontend(socket: a)
        let notifier = try EventNotifier()
        for index: UInt32 in [256, 257, 1000] {
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in try frontend.setVringKick(index: index, notifier: notifier) }
            assertThrowsVirtioError(.configuration) { () throws(VirtioError) in try frontend.setVringCall(index: index, notifier: notifier) }
        }
        XCTAssertTrue(frontend.sentRequests.isEmpty)
        XCTAssertEqual(try Poll.waitReadable(b.raw, milliseconds: 0), .timedOut, "nothing may have been sent")
    }

    func testDisabledRingIsAnnouncedWithZero() throws {
        let result = try runScripted(frontend: { (f) throws(VirtioError) in
            try f.setVringEnable(index: 1, enabled: false)
        }, backend: { channel in
            try channel.expect(.setVringEnable(VringState(index: 1, num: 0)))
        })
        XCTAssertNoThrow(try result.get())
    }
}
