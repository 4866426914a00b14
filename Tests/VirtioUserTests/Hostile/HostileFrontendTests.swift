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
        /// Whether the back-end's error is the one this input must cause.
        let expected: @Sendable (VirtioError) -> Bool
        let script: @Sendable (HostileFrontend) throws -> Void

        init(name: String, expected: VirtioError, script: @escaping @Sendable (HostileFrontend) throws -> Void) {
            self.init(name: name, matching: { $0 == expected }, script: script)
        }

        /// For errors with a field that changes from run to run (an address).
        init(name: String, matching: @escaping @Sendable (VirtioError) -> Bool, script: @escaping @Sendable (HostileFrontend) throws -> Void) {
            self.name = name
            expected = matching
            self.script = script
        }
    }

    /// A ring set-up error for `ring` whose problem starts and ends so (the address between
    /// them is the front-end's own).
    static func ringSetup(_ ring: Int, _ start: String, _ end: String) -> @Sendable (VirtioError) -> Bool {
        { error in
            guard case .peerProtocol(.badRingSetup(ring, let problem)) = error else { return false }
            return problem.hasPrefix(start) && problem.hasSuffix(end)
        }
    }

    /// A descriptor of `length` bytes outside the shared memory (at an address of the run's).
    static func outsideMemory(length: Int) -> @Sendable (VirtioError) -> Bool {
        { error in
            guard case .memory(.outsideSharedMemory(_, length)) = error else { return false }
            return true
        }
    }

    static let features = VirtioFeatures.version1.union(.vhostUserProtocolFeatures)

    static let controlCases: [Case] = [
        Case(name: "header with protocol version 2", expected: .peerProtocol(.malformedMessage(request: "GET_FEATURES", problem: "protocol version 2; only version 1 exists"))) {
            try $0.sendRaw(request: 1, flags: 2, size: 0)
        },
        Case(name: "payload larger than any message", expected: .peerProtocol(.malformedMessage(request: "SET_FEATURES", problem: "a 1048576-byte payload announced; the limit is 4096"))) {
            try $0.sendRaw(request: 2, flags: 1, size: 1 << 20)
        },
        Case(name: "request carrying the reply flag", expected: .peerProtocol(.malformedMessage(request: "GET_FEATURES", problem: "the reply flag is set on a request"))) {
            try $0.sendRaw(request: 1, flags: 1 | 4, size: 0)
        },
        Case(name: "SET_FEATURES with a 4-byte payload", expected: .peerProtocol(.malformedMessage(request: "SET_FEATURES", problem: "a 8-byte payload is needed; 4 came"))) {
            try $0.sendRaw(request: 2, flags: 1, size: 4, payload: [1, 0, 0, 0])
        },
        Case(name: "SET_FEATURES beyond the offer", matching: { if case .peerProtocol(.beyondOffer(request: "SET_FEATURES", let asked, let offered)) = $0 { asked & ~offered == 1 << 62 } else { false } }) {
            try $0.send(.setFeatures(HostileFrontendTests.features.union(VirtioFeatures(rawValue: 1 << 62))))
        },
        Case(name: "SET_PROTOCOL_FEATURES beyond the offer", matching: { if case .peerProtocol(.beyondOffer(request: "SET_PROTOCOL_FEATURES", let asked, let offered)) = $0 { asked & ~offered == 1 << 40 } else { false } }) {
            try $0.send(.setFeatures(HostileFrontendTests.features))
            try $0.send(.setProtocolFeatures(VhostUserProtocolFeatures(rawValue: 1 << 40)))
        },
        Case(name: "an fd on SET_FEATURES", expected: .peerProtocol(.badFileDescriptors(request: "SET_FEATURES", problem: "0 file descriptor(s) are needed; 1 arrived"))) {
            try $0.send(.setFeatures(HostileFrontendTests.features), descriptors: [$0.memfd])
        },
        Case(name: "20 fds on one message", expected: .peerProtocol(.badFileDescriptors(request: "a message header", problem: "more file descriptors attached than any message may carry"))) {
            try $0.sendRaw(request: 1, flags: 1, size: 0, descriptors: Array(repeating: $0.memfd, count: 20))
        },
        Case(name: "SET_STATUS wider than 8 bits", expected: .peerProtocol(.malformedMessage(request: "SET_STATUS", problem: "0x1ff does not fit the 8-bit status"))) {
            try $0.sendRaw(request: 39, flags: 1, size: 8, payload: littleEndian(UInt64(0x1FF)))
        },
        Case(name: "SET_VRING_KICK with reserved bits", expected: .peerProtocol(.malformedMessage(request: "SET_VRING_KICK", problem: "payload 0x201 has bits set beyond the index and the no-fd flag"))) {
            try $0.sendRaw(request: 12, flags: 1, size: 8, payload: littleEndian(UInt64(0x201)))
        },
        Case(name: "SET_MEM_TABLE with 9 regions", expected: .peerProtocol(.malformedMessage(request: "SET_MEM_TABLE", problem: "9 regions named; 1…8 are allowed"))) {
            let region = $0.region
            try $0.send(.setMemTable(Array(repeating: region, count: 9)), descriptors: Array(repeating: $0.memfd, count: 9))
        },
        Case(name: "SET_MEM_TABLE with no region", expected: .peerProtocol(.malformedMessage(request: "SET_MEM_TABLE", problem: "0 regions named; 1…8 are allowed"))) {
            try $0.send(.setMemTable([]))
        },
        Case(name: "SET_MEM_TABLE without its fd", expected: .peerProtocol(.badFileDescriptors(request: "SET_MEM_TABLE", problem: "1 file descriptor(s) are needed; 0 arrived"))) {
            try $0.sendMemoryTable(descriptors: [])
        },
        Case(name: "region larger than its file", expected: .peerProtocol(.badMemoryTable(problem: "a region ends at byte 2097152 of its file, which has only 1048576 bytes"))) {
            var region = $0.region
            region.size = 2 << 20
            try $0.sendMemoryTable([region])
        },
        Case(name: "region offset past the end of its file", expected: .peerProtocol(.badMemoryTable(problem: "a region ends at byte 1052672 of its file, which has only 1048576 bytes"))) {
            var region = $0.region
            region.size = 4096
            region.mmapOffset = UInt64(HostileFrontend.memorySize)
            try $0.sendMemoryTable([region])
        },
        Case(name: "regions spanning more than a session may map", expected: .peerProtocol(.badMemoryTable(problem: "the regions span more than 1024 GiB together, the most one session may map"))) {
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
        Case(name: "overlapping regions", expected: .peerProtocol(.badMemoryTable(problem: "regions 0 and 1 overlap"))) {
            var second = $0.region
            second.guestPhysicalAddress += 4096
            second.userAddress += 1 << 30
            second.size = 4096
            try $0.sendMemoryTable([$0.region, second])
        },
        Case(name: "region wrapping the address space", expected: .peerProtocol(.badMemoryTable(problem: "a region (size 1048576, offset 0) is empty or wraps around the address space"))) {
            var region = $0.region
            region.guestPhysicalAddress = UInt64.max - 10
            try $0.sendMemoryTable([region])
        },
        Case(name: "empty region", expected: .peerProtocol(.badMemoryTable(problem: "a region (size 0, offset 0) is empty or wraps around the address space"))) {
            var region = $0.region
            region.size = 0
            try $0.sendMemoryTable([region])
        },
        Case(name: "queue size not a power of two", expected: .peerProtocol(.badRingSetup(ring: 1, problem: "SET_VRING_NUM 100 is not a power of two up to 32768"))) {
            try $0.send(.setVringNum(VringState(index: 1, num: 100)))
        },
        Case(name: "queue size above 32768", expected: .peerProtocol(.badRingSetup(ring: 1, problem: "SET_VRING_NUM 65536 is not a power of two up to 32768"))) {
            try $0.send(.setVringNum(VringState(index: 1, num: 65536)))
        },
        Case(name: "a ring that does not exist", expected: .peerProtocol(.badRingSetup(ring: 16, problem: "SET_VRING_NUM names it; this back-end has rings 0…15"))) {
            try $0.send(.setVringNum(VringState(index: 16, num: 256)))
        },
        Case(name: "ring base beyond 16 bits", expected: .peerProtocol(.badRingSetup(ring: 1, problem: "SET_VRING_BASE 65536 for a split ring does not fit a 16-bit index"))) {
            try $0.send(.setVringBase(VringState(index: 1, num: 0x10000)))
        },
        Case(name: "kick before SET_MEM_TABLE", expected: .peerProtocol(.badRingSetup(ring: 1, problem: "SET_VRING_KICK before SET_MEM_TABLE"))) {
            try $0.negotiate()
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr($0.ringAddress(1)))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "descriptor table outside the memory", matching: ringSetup(1, "its descriptor table at 0x", "(4096 bytes) is not inside the shared memory")) {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var address = $0.ringAddress(1)
            address.descriptorTable = $0.address + UInt64(2 << 20)
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr(address))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "used ring ending past the memory", matching: ringSetup(1, "its used ring at 0x", "(2054 bytes) is not inside the shared memory")) {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var address = $0.ringAddress(1)
            address.usedRing = $0.address + UInt64(HostileFrontend.memorySize - 64)
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr(address))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "misaligned descriptor table", matching: ringSetup(1, "its descriptor table at 0x", "is not 16-byte aligned")) {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var address = $0.ringAddress(1)
            address.descriptorTable += 8
            try $0.send(.setVringNum(VringState(index: 1, num: 256)))
            try $0.send(.setVringAddr(address))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        Case(name: "ring started before its size", expected: .peerProtocol(.badRingSetup(ring: 1, problem: "started with size 0; a power of two up to 32768 is required (send SET_VRING_NUM first)"))) {
            try $0.negotiate()
            try $0.sendMemoryTable()
            try $0.send(.setVringAddr($0.ringAddress(1)))
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: false)))
        },
        // The data path reads the session's format, not each ring's: a ring left running in
        // the old one would be a ring nobody serves.
        Case(name: "ring format changed while rings run", expected: .peerProtocol(.malformedMessage(request: "SET_FEATURES", problem: "the ring format changed while rings run; stop them (GET_VRING_BASE) first"))) {
            try $0.negotiate()
            try $0.sendMemoryTable()
            try $0.startRing(1)
            try $0.send(.setFeatures(HostileFrontendTests.features.union(.ringPacked)))
        },
        Case(name: "call fd that is a pipe", expected: .peerProtocol(.badFileDescriptors(request: "SET_VRING_CALL for ring 1", problem: "it carries a pipe, not an eventfd; kick and call fds must be eventfds"))) {
            try $0.negotiate()
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw VirtioError.system("pipe", errno: errno) }
            defer { close(ends[0]); close(ends[1]) }
            // Its reader closed: a write would raise SIGPIPE, killing every session.
            try $0.send(.setVringCall(VringFile(index: 1, hasDescriptor: true)), descriptors: [ends[1]])
        },
        Case(name: "kick fd that is a regular file", expected: .peerProtocol(.badFileDescriptors(request: "SET_VRING_KICK for ring 1", problem: "it carries the file /dev/null, not an eventfd; kick and call fds must be eventfds"))) {
            try $0.negotiate()
            try $0.sendMemoryTable()
            let file = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { close(file) }
            try $0.send(.setVringKick(VringFile(index: 1, hasDescriptor: true)), descriptors: [file])
        },
        Case(name: "kick fd that is a socket", expected: .peerProtocol(.badFileDescriptors(request: "SET_VRING_KICK for ring 0", problem: "it carries a socket, not an eventfd; kick and call fds must be eventfds"))) {
            try $0.negotiate()
            try $0.sendMemoryTable()
            var pair: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0 else { throw VirtioError.system("socketpair", errno: errno) }
            defer { close(pair[0]); close(pair[1]) }
            try $0.send(.setVringKick(VringFile(index: 0, hasDescriptor: true)), descriptors: [pair[0]])
        },
        Case(name: "GET_CONFIG without the CONFIG protocol feature", expected: .peerProtocol(.notNegotiated(request: "GET_CONFIG", feature: "the CONFIG protocol feature"))) {
            try $0.negotiate()
            try $0.send(.getConfig(VhostUserConfigSpace(offset: 0, size: 12)))
        },
        Case(name: "GET_CONFIG for 300 bytes", expected: .peerProtocol(.malformedMessage(request: "GET_CONFIG", problem: "300 bytes of config space asked for; at most 256 are allowed"))) {
            try $0.sendRaw(request: 24, flags: 1, size: 12, payload: littleEndian(UInt32(0)) + littleEndian(UInt32(300)) + littleEndian(UInt32(0)))
        },
        Case(name: "GET_CONFIG shorter than its window", expected: .peerProtocol(.malformedMessage(request: "GET_CONFIG", problem: "12 bytes need 24 payload bytes; 12 came"))) {
            try $0.sendRaw(request: 24, flags: 1, size: 12, payload: littleEndian(UInt32(0)) + littleEndian(UInt32(12)) + littleEndian(UInt32(0)))
        },
        Case(name: "GET_CONFIG beyond the config space", expected: .peerProtocol(.malformedMessage(request: "GET_CONFIG", problem: "12 bytes at offset 250 reach beyond the 256-byte config space"))) {
            try $0.negotiate(protocolFeatures: [.config])
            try $0.send(.getConfig(VhostUserConfigSpace(offset: 250, size: 12)))
        },
        Case(name: "NET_SET_MTU without the NET_MTU protocol feature", expected: .peerProtocol(.notNegotiated(request: "NET_SET_MTU", feature: "the NET_MTU protocol feature"))) {
            try $0.negotiate()
            try $0.send(.netSetMTU(1500))
        },
        Case(name: "NET_SET_MTU below 68", expected: .peerProtocol(.malformedMessage(request: "NET_SET_MTU", problem: "20 is outside 68…65535"))) {
            try $0.negotiate(protocolFeatures: [.mtu])
            try $0.send(.netSetMTU(20))
        },
    ]

    static let ringCases: [Case] = [
        Case(name: "available index jumping past the queue size", expected: .ringViolation(.availableIndexJump(count: 1000, queueSize: 256))) {
            $0.makeAvailable(ring: 1, heads: [], availIndex: 1000)
        },
        Case(name: "available head outside the table", expected: .ringViolation(.headOutOfRange(head: 300, queueSize: 256))) {
            $0.makeAvailable(ring: 1, heads: [300])
        },
        Case(name: "next link outside the table", expected: .ringViolation(.linkOutOfRange(next: 999, entries: 256, indirect: false))) {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 72, flags: 1, next: 999)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "descriptor chain looping", expected: .ringViolation(.chainTooLong(head: 0, limit: 256))) {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 72, flags: 1, next: 1)
            $0.writeDescriptor(ring: 1, 1, address: $0.bufferAddress(1), length: 72, flags: 1, next: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "indirect descriptor (not negotiated)", expected: .ringViolation(.indirectNotNegotiated(index: 0))) {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 16, flags: 4)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "buffer outside the memory", matching: outsideMemory(length: 72)) {
            $0.writeDescriptor(ring: 1, 0, address: $0.address + UInt64(4 << 20), length: 72, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "buffer straddling the end of the memory", matching: outsideMemory(length: 72)) {
            $0.writeDescriptor(ring: 1, 0, address: $0.address + UInt64(HostileFrontend.memorySize - 16), length: 72, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "buffer address + length overflowing", expected: .memory(.outsideSharedMemory(address: 0xffff_ffff_ffff_fffb, length: 100))) {
            $0.writeDescriptor(ring: 1, 0, address: UInt64.max - 4, length: 100, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "device-writable descriptor in a transmit chain", expected: .peerProtocol(.badFrame(problem: "a transmit chain contains a device-writable descriptor"))) {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 72, flags: 2)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "transmit chain longer than any frame", expected: .peerProtocol(.badFrame(problem: "a transmit chain of 1572864 bytes is longer than the header and the longest frame (65600 bytes) together"))) {
            // Three 512 KiB descriptors over the same memory: 1.5 MiB claimed for one frame.
            for i in 0..<3 {
                $0.writeDescriptor(ring: 1, i, address: $0.bufferAddress(0), length: 512 << 10, flags: i < 2 ? 1 : 0, next: UInt16(i + 1))
            }
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "transmit chain of more descriptors than a frame may have", expected: .ringViolation(.chainTooLong(head: 0, limit: 256))) {
            // A 1,024-entry ring: 300 descriptors of 64 bytes fit it, and the frame-length cap.
            _ = try $0.get(.getVringBase(VringState(index: 1, num: 0)))
            try $0.startRing(1, size: 1024)
            for i in 0..<300 {
                $0.writeDescriptor(ring: 1, i, address: $0.bufferAddress(0), length: 64, flags: i < 299 ? 1 : 0, next: UInt16(i + 1))
            }
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "transmit chain shorter than the virtio-net header", expected: .peerProtocol(.badFrame(problem: "a transmit chain of 4 bytes is shorter than the 12-byte virtio-net header"))) {
            $0.writeDescriptor(ring: 1, 0, address: $0.bufferAddress(0), length: 4, flags: 0)
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "read-only descriptor in a receive chain", expected: .peerProtocol(.badFrame(problem: "a receive chain contains a read-only descriptor"))) {
            $0.writeDescriptor(ring: 0, 0, address: $0.bufferAddress(100), length: 2048, flags: 0)
            $0.makeAvailable(ring: 0, heads: [0])
            $0.writeValidFrame()
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "receive ring head outside the table", expected: .ringViolation(.headOutOfRange(head: 4096, queueSize: 256))) {
            $0.makeAvailable(ring: 0, heads: [4096])
            $0.writeValidFrame()
            $0.makeAvailable(ring: 1, heads: [0])
        },
        Case(name: "memory file shrunk after SET_MEM_TABLE", expected: .memory(.regionShrunk(region: 0))) {
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
            let error = backend.statistics.lastError
            XCTAssertTrue(error.map(item.expected) ?? false, "\(item.name): the error was \(error.map { "\($0)" } ?? "none"), not the one expected")
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
