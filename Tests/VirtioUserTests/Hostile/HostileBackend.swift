#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import Synchronization
import Logging
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A back-end scripted to misbehave, for one connection from our device.
///
/// It answers the handshake itself (offering VERSION_1 only, so no REPLY_ACK and rings enabled
/// at start) until `script` takes over: on the control path by answering a request wrongly, or
/// after the rings start by writing the device's used rings through its own mapping of the
/// device's memory.
final class HostileBackend: @unchecked Sendable {
    /// What the script sees once the rings started.
    final class Session {
        let channel: VhostUserChannel
        let memory: UnsafeMutableRawPointer
        let length: Int
        let region: MemoryRegionDescriptor
        /// The device's memory fd, as SET_MEM_TABLE passed it.
        let memoryDescriptor: OwnedDescriptor
        var addresses: [UInt32: VringAddress] = [:]
        var sizes: [UInt32: Int] = [:]
        /// The device's kick and call eventfds, by ring (shared open files: what we do to
        /// their flags and counters, the device sees).
        var kicks: [UInt32: OwnedDescriptor] = [:]
        var calls: [UInt32: OwnedDescriptor] = [:]

        init(channel: VhostUserChannel, memory: UnsafeMutableRawPointer, length: Int, region: MemoryRegionDescriptor, memoryDescriptor: OwnedDescriptor) {
            self.channel = channel
            self.memoryDescriptor = memoryDescriptor
            self.memory = memory
            self.length = length
            self.region = region
        }

        deinit { _ = cvs_munmap(memory, length) }

        /// Ring `index` as mapped here.
        func ring(_ index: UInt32) -> SplitRingMemory {
            let address = addresses[index]!
            func local(_ user: UInt64) -> UnsafeMutableRawPointer {
                memory + Int(user - region.userAddress + region.mmapOffset)
            }
            return SplitRingMemory(size: sizes[index]!, descriptors: local(address.descriptorTable),
                                   avail: local(address.availableRing), used: local(address.usedRing))
        }

        /// Writes used entry `slot` and publishes `usedIndex`.
        func complete(ring index: UInt32, slot: Int, id: UInt32, length: UInt32, usedIndex: UInt16) {
            let ring = ring(index)
            cvs_used_ring(ring.used)[slot & (ring.size - 1)] = cvs_vring_used_elem(id: id, len: length)
            cvs_store_release_u16(cvs_used_idx(ring.used), usedIndex)
        }

        /// Writes `num_buffers` into the virtio-net header of receive buffer `head` (ring 0).
        func writeNumBuffers(head: UInt16, _ value: UInt16) {
            let descriptor = ring(0).descriptors[Int(head)]
            (memory + Int(descriptor.addr - region.guestPhysicalAddress + region.mmapOffset) + 10)
                .storeBytes(of: value.littleEndian, as: UInt16.self)
        }

        /// Waits until the driver made `count` buffers available on ring `index`; their heads.
        func waitForAvailable(ring index: UInt32, count: Int) -> [UInt16] {
            let ring = ring(index)
            _ = waitUntil { Int(cvs_load_acquire_u16(cvs_avail_idx(ring.avail))) >= count }
            return (0..<count).map { cvs_avail_ring(ring.avail)[$0] }
        }
    }

    enum Takeover: Sendable {
        /// Replaces the answer to this request.
        case control(VhostUserRequest, @Sendable (VhostUserChannel) throws -> Void)
        /// Runs once both rings have their kick fds.
        case rings(@Sendable (Session) throws -> Void)
    }

    let path: String
    private let listener: UnixListener?
    private var thread: DedicatedThread?
    private let finished = Flag()

    /// A one-way flag the serving thread raises when the ring script has run.
    final class Flag: Sendable {
        let raised = Atomic<Bool>(false)
    }

    /// True once a `.rings` script has returned.
    var ringScriptFinished: Bool { finished.raised.load(ordering: .acquiring) }

    /// Serves on `path`, offering `features` (VERSION_1 alone by default) and, when `features`
    /// has PROTOCOL_FEATURES, `protocolFeatures` (with CONFIG it answers GET_CONFIG: link up).
    init(path: String, features: VirtioFeatures = .version1, protocolFeatures: VhostUserProtocolFeatures = [], takeover: Takeover) throws {
        self.path = path
        let listener = try UnixListener(path: path)
        self.listener = listener
        let finished = self.finished
        thread = try DedicatedThread(name: "hostile-backend") {
            guard let socket = try? listener.accept(milliseconds: 10_000) else { return }
            try? Self.serve(VhostUserChannel(socket: socket), features: features, protocolFeatures: protocolFeatures, takeover: takeover, finished: finished)
        }
    }

    /// Connects to a device listening on `path` (server mode) and serves it, offering `features`.
    init(connectingTo path: String, features: VirtioFeatures = .version1, takeover: Takeover) throws {
        self.path = path
        listener = nil
        let finished = self.finished
        thread = try DedicatedThread(name: "hostile-backend") {
            guard let socket = try? UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 10_000)) else { return }
            try? Self.serve(VhostUserChannel(socket: socket), features: features, protocolFeatures: [], takeover: takeover, finished: finished)
        }
    }

    /// Waits for the script to end (the connection closes with it).
    func join() {
        thread?.join()
        thread = nil
    }

    private static func serve(_ channel: VhostUserChannel, features: VirtioFeatures, protocolFeatures: VhostUserProtocolFeatures, takeover: Takeover, finished: Flag) throws {
        var session: Session?
        var started = Set<UInt32>()
        var sizes: [UInt32: Int] = [:]
        var addresses: [UInt32: VringAddress] = [:]
        var kicks: [UInt32: OwnedDescriptor] = [:]
        var calls: [UInt32: OwnedDescriptor] = [:]
        while true {
            let frame = try channel.receive(timeoutMilliseconds: 10_000)
            if case .control(let request, let answer) = takeover, frame.header.request == request {
                try answer(channel)
                // Give the device time to read the bad answer before the close.
                _ = Poll.waitHangUp(channel.socket.raw, milliseconds: 10_000)
                return
            }
            let message = try VhostUserMessage.decode(header: frame.header, payload: frame.payload, descriptorCount: frame.descriptors.count)
            switch message {
            case .getFeatures:
                try channel.reply(to: .getFeatures, payload: bytes(features.rawValue))
            case .getProtocolFeatures:
                try channel.reply(to: .getProtocolFeatures, payload: bytes(protocolFeatures.rawValue))
            case .getConfig(let window):
                let config = VirtioNetConfig(macAddress: MACAddress(2, 0, 0, 0, 0, 1), status: VirtioNetConfig.linkUp, maxQueuePairs: 1, mtu: 1500)
                var space = [UInt8](repeating: 0, count: Int(window.offset + window.size))
                space.replaceSubrange(0..<min(space.count, VirtioNetConfig.byteCount), with: config.bytes.prefix(space.count))
                let answer = VhostUserConfigSpace(offset: window.offset, size: window.size, payload: Array(space[Int(window.offset)...]))
                try channel.reply(to: .getConfig, payload: answer.encoded)
            case .getVringBase(let state):
                try channel.reply(to: .getVringBase, payload: bytes(UInt64(state.index)))
            case .setMemTable(let regions):
                let region = regions[0]
                let length = Int(region.mmapOffset + region.size)
                guard let mapping = cvs_mmap_shared(frame.descriptors[0].raw, length, 0) else { return }
                session = Session(channel: channel, memory: mapping, length: length, region: region, memoryDescriptor: frame.descriptors[0])
            case .setVringNum(let state):
                sizes[state.index] = Int(state.num)
            case .setVringAddr(let address):
                addresses[address.index] = address
            case .setVringCall(let file):
                calls[file.index] = frame.descriptors.first
            case .setVringKick(let file):
                kicks[file.index] = frame.descriptors.first
                started.insert(file.index)
                if started.count == 2, let session, case .rings(let script) = takeover {
                    session.sizes = sizes
                    session.addresses = addresses
                    session.kicks = kicks
                    session.calls = calls
                    try script(session)
                    finished.raised.store(true, ordering: .releasing)
                    _ = Poll.waitHangUp(channel.socket.raw, milliseconds: 10_000)
                    return
                }
            default:
                break
            }
        }
    }

    private static func bytes(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }
}

/// A device for a scripted back-end: no reconnection (the script's session is the only one),
/// and replies within `replyTimeoutMilliseconds` (a script that has taken over answers none).
func hostileBackendDeviceConfiguration(_ path: String, replyTimeoutMilliseconds: Int = 300) -> VirtioUserDevice.Configuration {
    var configuration = VirtioUserDevice.Configuration(socketPath: path)
    configuration.reconnect = false
    configuration.replyTimeoutMilliseconds = replyTimeoutMilliseconds
    return configuration
}

extension HostileBackend {
    /// A device started against a back-end that runs `script` once the rings run; returns
    /// when the script has run.
    static func deviceAfterScript(
        _ testCase: XCTestCase, replyTimeoutMilliseconds: Int = 300, logger: Logger? = nil,
        _ script: @escaping @Sendable (Session) throws -> Void
    ) throws -> (HostileBackend, VirtioUserDevice) {
        let path = try makeSocketPath(testCase)
        let peer = try HostileBackend(path: path, takeover: .rings(script))
        var configuration = hostileBackendDeviceConfiguration(path, replyTimeoutMilliseconds: replyTimeoutMilliseconds)
        if let logger { configuration.logger = logger }
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        XCTAssertTrue(waitUntil { peer.ringScriptFinished }, "the script did not run")
        return (peer, device)
    }
}
