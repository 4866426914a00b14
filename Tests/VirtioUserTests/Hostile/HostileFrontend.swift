#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// A front-end scripted to misbehave: raw vhost-user messages, and ring memory of its own in an
/// unsealed memfd (so it can also shrink the file under the back-end).
///
/// Memory layout (one region, addresses are our own virtual addresses, as our device does):
/// ring 0 at 0, ring 1 at 16 KiB, frame buffers of 2 KiB from 64 KiB.
final class HostileFrontend {
    static let queueSize = 256
    static let memorySize = 1 << 20
    static let bufferBase = 64 << 10
    static let bufferSize = 2048

    let channel: VhostUserChannel
    let memfd: Int32
    let base: UnsafeMutableRawPointer
    private var notifiers: [EventNotifier] = []
    /// Each ring's queue size (``startRing(_:size:enable:)`` may choose another).
    private var sizes = [queueSize, queueSize]
    /// The kick and call fds of each ring started, by ring index.
    private(set) var kicks: [Int: EventNotifier] = [:]
    private(set) var calls: [Int: EventNotifier] = [:]

    init(connectingTo path: String) throws {
        channel = VhostUserChannel(socket: try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 5000)))
        memfd = cvs_memfd_create("hostile-frontend", 0x0001)  // MFD_CLOEXEC, no sealing
        guard memfd >= 0, ftruncate(memfd, off_t(Self.memorySize)) == 0,
              let mapped = cvs_mmap_shared(memfd, Self.memorySize, 0) else {
            throw VirtioError.system("creating the hostile front-end's memory", errno: errno)
        }
        base = mapped
        base.initializeMemory(as: UInt8.self, repeating: 0, count: Self.memorySize)
    }

    deinit {
        _ = cvs_munmap(base, Self.memorySize)
        close(memfd)
    }

    var address: UInt64 { UInt64(UInt(bitPattern: base)) }

    // MARK: Messages

    func send(_ message: VhostUserMessage, descriptors: [Int32] = []) throws {
        try channel.send(message, descriptors: descriptors)
    }

    /// Sends bytes exactly as given: for headers no well-behaved sender would write.
    func sendRaw(request: UInt32, flags: UInt32, size: UInt32, payload: [UInt8] = [], descriptors: [Int32] = []) throws {
        try VirtioUserTests.sendRaw(rawMessage(request: request, flags: flags, size: size, payload: payload),
                                    descriptors: descriptors, on: channel.socket.raw)
    }

    /// The u64 reply to a GET request.
    func get(_ message: VhostUserMessage) throws -> UInt64 {
        try send(message)
        let frame = try channel.receive(timeoutMilliseconds: 5000)
        var value: UInt64 = 0
        for (i, byte) in frame.payload.prefix(8).enumerated() { value |= UInt64(byte) << (8 * UInt64(i)) }
        return value
    }

    /// The usual opening: owner, features (protocol features too, unless told not to).
    func negotiate(protocolFeatures: Bool = true) throws {
        try negotiate(protocolFeatures: protocolFeatures ? [] : nil)
    }

    /// The opening with these protocol features set (nil: without protocol features at all).
    func negotiate(protocolFeatures: VhostUserProtocolFeatures?) throws {
        try send(.setOwner)
        let offered = VirtioFeatures(rawValue: try get(.getFeatures))
        let wanted: VirtioFeatures = protocolFeatures != nil ? [.version1, .vhostUserProtocolFeatures] : [.version1]
        try send(.setFeatures(offered.intersection(wanted)))
        if let protocolFeatures {
            _ = try get(.getProtocolFeatures)
            try send(.setProtocolFeatures(protocolFeatures))
        }
    }

    /// The one region covering all our memory.
    var region: MemoryRegionDescriptor {
        MemoryRegionDescriptor(guestPhysicalAddress: address, size: UInt64(Self.memorySize), userAddress: address, mmapOffset: 0)
    }

    func sendMemoryTable(_ regions: [MemoryRegionDescriptor]? = nil, descriptors: [Int32]? = nil) throws {
        let table = regions ?? [region]
        try send(.setMemTable(table), descriptors: descriptors ?? Array(repeating: memfd, count: table.count))
    }

    // MARK: Rings

    func ring(_ index: Int) -> SplitRingMemory {
        SplitRingMemory.place(at: base + index * (16 << 10), size: sizes[index])
    }

    func ringAddress(_ index: Int) -> VringAddress {
        let ring = ring(index)
        func at(_ pointer: UnsafeMutableRawPointer) -> UInt64 { UInt64(UInt(bitPattern: pointer)) }
        return VringAddress(index: UInt32(index), descriptorTable: at(UnsafeMutableRawPointer(ring.descriptors)),
                            usedRing: at(ring.used), availableRing: at(ring.avail))
    }

    /// Sets up and enables ring `index` the way a correct front-end does. Ring 1 may be as
    /// large as 1024 (it ends below the frame buffers); ring 0 holds 256.
    func startRing(_ index: Int, size: Int = queueSize, enable: Bool = true) throws {
        let i = UInt32(index)
        sizes[index] = size
        try send(.setVringNum(VringState(index: i, num: UInt32(size))))
        try send(.setVringBase(VringState(index: i, num: 0)))
        try send(.setVringAddr(ringAddress(index)))
        let kick = try EventNotifier()
        let call = try EventNotifier()
        notifiers += [kick, call]
        kicks[index] = kick
        calls[index] = call
        try send(.setVringKick(VringFile(index: i, hasDescriptor: true)), descriptors: [kick.descriptor.raw])
        try send(.setVringCall(VringFile(index: i, hasDescriptor: true)), descriptors: [call.descriptor.raw])
        if enable { try send(.setVringEnable(VringState(index: i, num: 1))) }
    }

    /// Everything up to traffic: negotiation, memory, both rings running, 8 receive buffers
    /// posted (a loopback back-end takes a frame only when it has somewhere to put it). Returns
    /// once the back-end has handled all of it (a GET's reply comes after every earlier
    /// message was processed).
    func startEverything() throws {
        try negotiate()
        try sendMemoryTable()
        try startRing(0)
        try startRing(1)
        for i in 0..<8 {
            writeDescriptor(ring: 0, i, address: bufferAddress(128 + i), length: UInt32(Self.bufferSize), flags: 2)
        }
        makeAvailable(ring: 0, heads: (0..<8).map { UInt16($0) })
        _ = try get(.getFeatures)
    }

    /// Address of frame buffer `slot` in our (= the back-end's "guest physical") space.
    func bufferAddress(_ slot: Int) -> UInt64 { address + UInt64(Self.bufferBase + slot * Self.bufferSize) }

    /// Writes descriptor `index` of ring `ring` verbatim.
    func writeDescriptor(ring: Int, _ index: Int, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0) {
        self.ring(ring).descriptors[index] = cvs_vring_desc(addr: address, len: length, flags: flags, next: next)
    }

    /// Puts `heads` on ring `ring`'s available ring from entry 0 and publishes them (index
    /// `availIndex`, by default the number of heads).
    func makeAvailable(ring: Int, heads: [UInt16], availIndex: UInt16? = nil) {
        let memory = self.ring(ring)
        for (i, head) in heads.enumerated() { cvs_avail_ring(memory.avail)[i] = head }
        cvs_store_release_u16(cvs_avail_idx(memory.avail), availIndex ?? UInt16(heads.count))
    }

    /// A well-formed one-descriptor frame (header + 60 bytes) as descriptor 0 of the TX ring.
    func writeValidFrame(descriptor index: Int = 0) {
        writeDescriptor(ring: 1, index, address: bufferAddress(index), length: 12 + 60, flags: 0)
    }

    // MARK: Outcome

    /// True once the back-end closed the connection (waits up to `seconds`).
    func waitForHangUp(seconds: Double = 10) -> Bool {
        let deadline = MonotonicClock.nanoseconds() + UInt64(seconds * 1e9)
        while MonotonicClock.nanoseconds() < deadline {
            if Poll.waitHangUp(channel.socket.raw, milliseconds: 50) { return true }
        }
        return false
    }
}
