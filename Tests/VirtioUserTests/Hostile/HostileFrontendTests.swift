#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// Malformed inputs from a front-end, on the control path and in the rings. For each one the
/// back-end must name the problem, close that connection, keep running, hold on to nothing
/// (fds, mappings) and serve the next, well-behaved front-end.
final class HostileFrontendTests: XCTestCase {
    struct Case: Sendable {
        let name: String
        /// Text the back-end's error must contain.
        let expected: String
        let script: @Sendable (HostileFrontend) throws -> Void
    }

    static let features = VirtioFeatures.version1.union(.vhostUserProtocolFeatures)

    static let controlCases: [Case] = [
        Case(name: "header with protocol version 2", expected: "protocol version 2") {
            try $0.sendRaw(request: 1, flags: 2, size: 0)
        },
        Case(name: "payload larger than any message", expected: "the limit is") {
            try $0.sendRaw(request: 2, flags: 1, size: 1 << 20)
        },
        Case(name: "request carrying the reply flag", expected: "reply flag set") {
            try $0.sendRaw(request: 1, flags: 1 | 4, size: 0)
        },
        Case(name: "SET_FEATURES with a 4-byte payload", expected: "needs a 8-byte payload") {
            try $0.sendRaw(request: 2, flags: 1, size: 4, payload: [1, 0, 0, 0])
        },
        Case(name: "SET_FEATURES beyond the offer", expected: "beyond what was offered") {
            try $0.send(.setFeatures(HostileFrontendTests.features.union(VirtioFeatures(rawValue: 1 << 62))))
        },
        Case(name: "SET_PROTOCOL_FEATURES beyond the offer", expected: "beyond what was offered") {
            try $0.send(.setFeatures(HostileFrontendTests.features))
            try $0.send(.setProtocolFeatures(VhostUserProtocolFeatures(rawValue: 1 << 40)))
        },
        Case(name: "an fd on SET_FEATURES", expected: "must carry 0 file descriptor") {
            try $0.send(.setFeatures(HostileFrontendTests.features), descriptors: [$0.memfd])
        },
        Case(name: "20 fds on one message", expected: "more file descriptors than any message") {
            try $0.sendRaw(request: 1, flags: 1, size: 0, descriptors: Array(repeating: $0.memfd, count: 20))
        },
        Case(name: "SET_STATUS wider than 8 bits", expected: "does not fit the 8-bit status") {
            try $0.sendRaw(request: 39, flags: 1, size: 8, payload: littleEndian(UInt64(0x1FF)))
        },
        Case(name: "SET_VRING_KICK with reserved bits", expected: "bits set beyond") {
            try $0.sendRaw(request: 12, flags: 1, size: 8, payload: littleEndian(UInt64(0x201)))
        },
        Case(name: "SET_MEM_TABLE with 9 regions", expected: "names 9 regions") {
            let region = $0.region
            try $0.send(.setMemTable(Array(repeating: region, count: 9)), descriptors: Array(repeating: $0.memfd, count: 9))
        },
        Case(name: "SET_MEM_TABLE with no region", expected: "names 0 regions") {
            try $0.send(.setMemTable([]))
        },
        Case(name: "SET_MEM_TABLE without its fd", expected: "must carry 1 file descriptor(s); 0 arrived") {
            try $0.sendMemoryTable(descriptors: [])
        },
        Case(name: "region larger than its file", expected: "which has only") {
            var region = $0.region
            region.size = 2 << 20
            try $0.sendMemoryTable([region])
        },
        Case(name: "region offset past the end of its file", expected: "which has only") {
            var region = $0.region
            region.size = 4096
            region.mmapOffset = UInt64(HostileFrontend.memorySize)
            try $0.sendMemoryTable([region])
        },
        Case(name: "regions spanning more than a session may map", expected: "the most one session may map") {
            // Two 768 GiB regions of one sparse file: each fits it, together they pass 1 TiB.
            guard ftruncate($0.memfd, off_t(2) << 40) == 0 else { throw VirtioError.system("ftruncate", errno: errno) }
            var first = $0.region
            first.size = 768 << 30
            var second = first
            second.guestPhysicalAddress += first.size
            second.userAddress += first.size
            second.mmapOffset = first.size
            try $0.sendMemoryTable([first, second])
        },
        Case(name: "overlapping regions", expected: "overlap") {
            var second = $0.region
            second.guestPhysicalAddress += 4096
            second.userAddress += 1 << 30
            second.size = 4096
            try $0.sendMemoryTable([$0.region, second])
        },
        Case(name: "region wrapping the address space", expected: "wraps around") {
            var region = $0.region
            region.guestPhysicalAddress = UInt64.max - 10
            try $0.sendMemoryTable([region])
        },
        Case(name: "empty region", expected: "empty or wraps") {
            var region = $0.region
            region.size = 0
            try $0.sendMemoryTable([region])
        },
        Case(name: "queue size not a power of two", expected: "not a power of two") {
            try $0.send(.setVringNum(VringState(index: 1, num: 100)))
        },
        Case(name: "queue size above 32768", expected: "not a power of two up to 32768") {
            try $0.send(.setVringNum(VringState(index: 1, num: 65536)))
        },
        Case(name: "a ring that does not exist", expected: "has rings 0…15") {
            try $0.send(.setVringNum(VringState(index: 16, num: 256)))
        },
        Case(name: "ring base beyond 16 bits", expected: "does not fit a 16-bit index") {
            try $0.send(.setVringBase(VringState(index: 1, num: 0x10000)))
        },
        Case(name: "kick before SET_MEM_TABLE", expected: "before SET_MEM_TABLE") {
            try $0.negotiate()
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr($0.ringAddress(1)))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "descriptor table outside the memory", expected: "is not inside the shared memory") {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var address = $0.ringAddress(1)
            address.descriptorTable = $0.address + UInt64(2 << 20)
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr(address))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "used ring ending past the memory", expected: "is not inside the shared memory") {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var address = $0.ringAddress(1)
            address.usedRing = $0.address + UInt64(HostileFrontend.memorySize - 64)
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr(address))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "misaligned descriptor table", expected: "is not 16-byte aligned") {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var address = $0.ringAddress(1)
            address.descriptorTable += 8
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr(address))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "ring started before its size", expected: "send SET_VRING_NUM first") {
            try $0.negotiate()
            try $0.sendMemoryTable()
            try $0.send(.setVringAddr($0.ringAddress(1)))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        // The data path reads the session's format, not each ring's: a ring left running in
        // the old one would be a ring nobody serves.
        Case(name: "ring format changed while rings run", expected: "changed the ring format while rings run") {
            try $0.negotiate()
            try $0.sendMemoryTable()
            try $0.startRing(1)
            try $0.send(.setFeatures(HostileFrontendTests.features.union(.ringPacked)))
        },
        Case(name: "call fd that is a pipe", expected: "carries a pipe, not an eventfd") {
            try $0.negotiate()
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw VirtioError.system("pipe", errno: errno) }
            defer { close(ends[0]); close(ends[1]) }
            // Its reader closed: a write would raise SIGPIPE, killing every session.
            try $0.send(.setVringCall(VringFile(index: 1, hasDescriptor: true)), descriptors: [ends[1]])
        },
        Case(name: "kick fd that is a regular file", expected: "carries the file") {
            try $0.negotiate()
            try $0.sendMemoryTable()
            let file = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { close(file) }
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: true)), descriptors: [file])
        },
        Case(name: "kick fd that is a socket", expected: "carries a socket, not an eventfd") {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var pair: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0 else { throw VirtioError.system("socketpair", errno: errno) }
            defer { close(pair[0]); close(pair[1]) }
            try $0.send(.setVringKick(VringFile(index: 0, hasDescriptor: true)), descriptors: [pair[0]])
        },
        Case(name: "GET_CONFIG without the CONFIG protocol feature", expected: "without the CONFIG protocol feature") {
            try $0.negotiate()
            try $0.send(.getConfig(VhostUserConfigSpace(offset: 0, size: 12)))
        },
        Case(name: "GET_CONFIG for 300 bytes", expected: "at most 256 are allowed") {
            try $0.sendRaw(request: 24, flags: 1, size: 12, payload: littleEndian(UInt32(0)) + littleEndian(UInt32(300)) + littleEndian(UInt32(0)))
        },
        Case(name: "GET_CONFIG shorter than its window", expected: "needs 24 payload bytes") {
            try $0.sendRaw(request: 24, flags: 1, size: 12, payload: littleEndian(UInt32(0)) + littleEndian(UInt32(12)) + littleEndian(UInt32(0)))
        },
        Case(name: "GET_CONFIG beyond the config space", expected: "reaches beyond") {
            try $0.negotiate(protocolFeatures: [.config])
            try $0.send(.getConfig(VhostUserConfigSpace(offset: 250, size: 12)))
        },
        Case(name: "NET_SET_MTU without the NET_MTU protocol feature", expected: "without the NET_MTU protocol feature") {
            try $0.negotiate()
            try $0.send(.netSetMTU(1500))
        },
        Case(name: "NET_SET_MTU below 68", expected: "outside 68…65535") {
            try $0.negotiate(protocolFeatures: [.mtu])
            try $0.send(.netSetMTU(20))
        },
    ]

    static let ringCases: [Case] = [
        Case(name: "available index jumping past the queue size", expected: "available index jumped by 1000") {
            $0.makeAvailable(ring: 1, heads: [], availIndex: 1000)
        },
        Case(name: "available head outside the table", expected: "names descriptor 300") {
            $0.makeAvailable(ring: 1, heads: [300])
        },
        Case(name: "next link outside the table", expected: "links to 999") {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 72, flags: 1, next: 999)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "descriptor chain looping", expected: "(a loop?)") {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 72, flags: 1, next: 1)
            $0.writeDescriptor(ring: 1, 1, address: $0.bufferAddress(1), length: 72, flags: 1, next: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "indirect descriptor (not negotiated)", expected: "indirect") {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 16, flags: 4)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "buffer outside the memory", expected: "points outside the shared memory") {
            $0.writeDescriptor(ring: 1, 0, address: $0.address + UInt64(4 << 20), length: 72, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "buffer straddling the end of the memory", expected: "points outside the shared memory") {
            $0.writeDescriptor(ring: 1, 0, address: $0.address + UInt64(HostileFrontend.memorySize - 16), length: 72, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "buffer address + length overflowing", expected: "points outside the shared memory") {
            $0.writeDescriptor(ring: 1, 0, address: UInt64.max - 4, length: 100, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "device-writable descriptor in a transmit chain", expected: "device-writable") {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 72, flags: 2)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "transmit chain longer than any frame", expected: "longer than the header and the longest frame") {
            // Three 512 KiB descriptors over the same memory: 1.5 MiB claimed for one frame.
            for i in 0..<3 {
                $0.writeDescriptor(ring: 1, i, address: $0.bufferAddress(0), length: 512 << 10, flags: i < 2 ? 1 : 0, next: UInt16(i + 1))
            }
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "transmit chain of more descriptors than a frame may have", expected: "longer than 256 descriptors") {
            // A 1,024-entry ring: 300 descriptors of 64 bytes fit it, and the frame-length cap.
            _ = try $0.get(.getVringBase(VringState(index: 1, num: 0)))
            try $0.startRing(1, size: 1024)
            for i in 0..<300 {
                $0.writeDescriptor(ring: 1, i, address: $0.bufferAddress(0), length: 64, flags: i < 299 ? 1 : 0, next: UInt16(i + 1))
            }
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "transmit chain shorter than the virtio-net header", expected: "shorter than the 12-byte") {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 4, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "read-only descriptor in a receive chain", expected: "read-only descriptor") {
            $0.writeDescriptor(ring: 0, 0, address: $0.bufferAddress(100), length: 2048, flags: 0)
            $0.makeAvailable(ring: 0, heads: [0])
            $0.writeValidFrame()
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "receive ring head outside the table", expected: "names descriptor 4096") {
            $0.makeAvailable(ring: 0, heads: [4096])
            $0.writeValidFrame()
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "memory file shrunk after SET_MEM_TABLE", expected: "shrank memory region 0's file") {
            // Without the truncation guard, the back-end's next look at the ring is SIGBUS.
            guard ftruncate($0.memfd, 0) == 0 else { throw VirtioError.system("ftruncate", errno: errno) }
        },
    ]

    func testEveryMalformedInputClosesOnlyThatConnection() throws {
        let backend = try startBackend(self, mode: .loopback)
        let path = backend.configuration.socketPath
        // A well-behaved session first, so that what any session leaves behind by design
        // (a cached thread stack, lazily opened files) is in the baseline.
        try serveWellBehavedFrontend(path, seed: 10)
        // The back-end lets go of a session on its own thread after the front-end left: the
        // trace is recorded just before, so wait for it, then give the release a moment.
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        MonotonicClock.sleep(milliseconds: 300)
        let fdsBefore = openDescriptorCount()
        let mapsBefore = mappingCount()
        var tried = 0
        for (index, item) in (Self.controlCases + Self.ringCases).enumerated() {
            let before = backend.statistics.protocolErrors
            do {
                let peer = try HostileFrontend(connectingTo: path)
                if index >= Self.controlCases.count {
                    try peer.startEverything()
                }
                try item.script(peer)
                XCTAssertTrue(peer.waitForHangUp(), "\(item.name): the back-end kept the connection open")
            }
            XCTAssertTrue(waitUntil { backend.statistics.protocolErrors == before + 1 }, "\(item.name): not counted as a protocol error")
            let message = backend.statistics.lastError ?? ""
            XCTAssertTrue(message.contains(item.expected), "\(item.name): error was \"\(message)\", expected it to mention \"\(item.expected)\"")
            tried += 1
        }
        print("hostile-frontend: \(tried) malformed inputs, \(backend.statistics.protocolErrors) connections closed with a protocol error")
        XCTAssertGreaterThanOrEqual(tried, 40)

        // The next, well-behaved front-end is served as if nothing happened.
        try serveWellBehavedFrontend(path, seed: 11)

        // Every hostile session's fds and mappings were released.
        XCTAssertTrue(waitUntil { openDescriptorCount() == fdsBefore }, "fds: \(fdsBefore) before, \(openDescriptorCount()) after")
        XCTAssertTrue(waitUntil { mappingCount() == mapsBefore }, "mappings: \(mapsBefore) before, \(mappingCount()) after")
    }

    private func serveWellBehavedFrontend(_ path: String, seed: UInt64) throws {
        let device = try VirtioUserDevice(configuration: .init(socketPath: path))
        try device.start()
        XCTAssertEqual(runLoopbackStream(device: device, stream: FrameStream(seed: seed), total: 5000).intact, 5000)
        device.stop()
    }
}

private func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}
