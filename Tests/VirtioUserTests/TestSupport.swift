import Foundation
import Synchronization
import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// A deterministic generator, so a failing frame can be regenerated from its sequence number.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476C_E1E5_B9B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Frame number `sequence` of a test stream: its length (60…1514) and every byte follow from the
/// sequence number and the stream's seed.
struct FrameStream {
    let seed: UInt64
    var minimumLength = 60
    var maximumLength = 1514
    /// When set, every frame starts with these destination and source MACs (for peers that
    /// switch on them).
    var addresses: (destination: MACAddress, source: MACAddress)? = nil

    func length(of sequence: UInt64) -> Int {
        var generator = SplitMix64(seed: seed ^ (sequence &* 0x2545_F491_4F6C_DD1D))
        return Int.random(in: minimumLength...maximumLength, using: &generator)
    }

    /// Writes frame `sequence` at `data`; returns its length.
    func write(_ sequence: UInt64, to data: UnsafeMutableRawPointer) -> Int {
        let length = length(of: sequence)
        var generator = SplitMix64(seed: seed &+ sequence)
        var offset = 0
        while offset + 8 <= length {
            data.storeBytes(of: generator.next(), toByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        var last = generator.next()
        while offset < length {
            data.storeBytes(of: UInt8(truncatingIfNeeded: last), toByteOffset: offset, as: UInt8.self)
            last >>= 8
            offset += 1
        }
        if let addresses {
            addresses.destination.write(to: data)
            addresses.source.write(to: data + 6)
        }
        return length
    }

    /// True when `bytes` is exactly frame `sequence`.
    func matches(_ sequence: UInt64, _ bytes: UnsafeRawBufferPointer, scratch: UnsafeMutableRawPointer) -> Bool {
        let length = write(sequence, to: scratch)
        return bytes.count == length && memcmp(bytes.baseAddress!, scratch, length) == 0
    }
}

/// A private directory with a socket path in it, removed at the end of the test.
func makeSocketPath(_ testCase: XCTestCase, name: String = "vhost.sock") throws -> String {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("vu-test-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    testCase.addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
    return directory.appendingPathComponent(name).path
}

/// The directory holding the built products (the test bundle sits beside the executables).
var productsDirectory: URL {
    Bundle.main.bundleURL
}

/// Sends `total` frames of `stream` through `device` (looped back by the peer) and checks each
/// received frame byte for byte, in order. With `window`, at most that many frames are in
/// flight (so a peer that drops when our receive ring is full, like testpmd, never has to);
/// with `macSwapped`, the peer is expected to have swapped the two MAC addresses. Runs on
/// queue pair `queue`. Frames longer than one buffer go out as chains of buffers and are
/// reassembled from their segments on receipt.
func runLoopbackStream(
    device: VirtioUserDevice, stream: FrameStream, total: UInt64, burstSize: Int = 32,
    window: Int? = nil, macSwapped: Bool = false, queue: Int = 0
) -> (sent: UInt64, intact: UInt64, mismatched: UInt64) {
    let segmentRoom = VirtioUserDevice.maximumFrameLength
    let tx = PacketBurst(capacity: max(burstSize, stream.maximumLength / segmentRoom + 1))
    let rx = PacketBurst(capacity: max(burstSize, stream.maximumLength / segmentRoom + 1))
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: 65_536, alignment: 8)
    let frame = UnsafeMutableRawPointer.allocate(byteCount: 65_536, alignment: 8)
    defer {
        scratch.deallocate()
        frame.deallocate()
    }
    var nextToSend: UInt64 = 0
    var nextExpected: UInt64 = 0
    var mismatched: UInt64 = 0
    var idleSpins = 0
    while nextExpected < total && idleSpins < 50_000_000 {
        // Fill the transmit burst with the next frames, each in as many buffers as it needs.
        while nextToSend < total {
            if let window, Int(nextToSend - nextExpected) >= window { break }
            let length = stream.length(of: nextToSend)
            let count = max(1, (length + segmentRoom - 1) / segmentRoom)
            guard tx.space >= count, device.availableBuffers(queue: queue) >= count else { break }
            let first = tx.count
            device.allocate(into: tx, count: count, queue: queue)
            _ = stream.write(nextToSend, to: frame)
            for k in 0..<count {
                var packet = tx[first + k]
                let part = min(segmentRoom, length - k * segmentRoom)
                packet.data.copyMemory(from: frame + k * segmentRoom, byteCount: part)
                packet.length = part
                packet.segments = k == 0 ? UInt16(count) : 0
                tx[first + k] = packet
            }
            nextToSend += 1
        }
        let sent = device.transmit(tx, queue: queue)
        let received = device.receive(into: rx, queue: queue)
        var i = 0
        while i < rx.count {
            let segments = max(1, Int(rx[i].segments))
            var length = 0
            for k in 0..<segments where i + k < rx.count {
                let part = rx[i + k]
                (frame + length).copyMemory(from: part.data, byteCount: part.length)
                length += part.length
            }
            if macSwapped { swapMACs(frame) }
            if !stream.matches(nextExpected, UnsafeRawBufferPointer(start: frame, count: length), scratch: scratch) { mismatched += 1 }
            nextExpected += 1
            i += segments
        }
        device.release(rx, queue: queue)
        idleSpins = (sent == 0 && received == 0) ? idleSpins + 1 : 0
    }
    device.release(tx, queue: queue)
    return (nextToSend, nextExpected - mismatched, mismatched)
}

/// Swaps destination and source MAC in place (undoing a peer's macswap before comparing).
func swapMACs(_ data: UnsafeMutableRawPointer) {
    for i in 0..<6 {
        let a = data.load(fromByteOffset: i, as: UInt8.self)
        data.storeBytes(of: data.load(fromByteOffset: 6 + i, as: UInt8.self), toByteOffset: i, as: UInt8.self)
        data.storeBytes(of: a, toByteOffset: 6 + i, as: UInt8.self)
    }
}

/// The repository's root (for its scripts).
let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Runs a program to completion; returns its exit status, standard output and standard error.
@discardableResult
func runProgram(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String, errors: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let out = output.fileHandleForReading.readDataToEndOfFile()
    let err = errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// Starts one of the package's executables with its output discarded.
func launchProduct(_ product: String, _ arguments: [String]) throws -> Process {
    let process = Process()
    process.executableURL = productsDirectory.appendingPathComponent(product)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
}

/// Polls `condition` every millisecond for up to `seconds`; true as soon as it holds. A bound
/// against hanging, not a timing assertion.
func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = MonotonicClock.nanoseconds() + UInt64(seconds * 1e9)
    while MonotonicClock.nanoseconds() < deadline {
        if condition() { return true }
        MonotonicClock.sleep(milliseconds: 1)
    }
    return condition()
}

/// A serving back-end on a fresh socket, stopped when the test ends.
func startBackend(
    _ testCase: XCTestCase, mode: BackendMode = .loopback,
    _ adjust: (inout VhostUserBackend.Configuration) -> Void = { _ in }
) throws -> VhostUserBackend {
    var configuration = VhostUserBackend.Configuration(socketPath: try makeSocketPath(testCase), mode: mode)
    adjust(&configuration)
    let backend = try VhostUserBackend(configuration: configuration)
    try backend.start()
    testCase.addTeardownBlock { backend.stop() }
    return backend
}

/// Tops `burst` up from the device's pool with `length`-byte frames (contents left as they are).
func fillWithFrames(_ burst: PacketBurst, from device: VirtioUserDevice, length: Int = 60) {
    device.allocate(into: burst, count: burst.space)
    for i in 0..<burst.count {
        var packet = burst[i]
        packet.length = length
        burst[i] = packet
    }
}

/// Entries in /proc/self/fd.
func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// Lines in /proc/self/maps.
func mappingCount() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return -1 }
    return text.split(separator: "\n").count
}

/// What our device negotiates with our back-end by default: MQ only with more than one pair,
/// MAC only when the back-end has one, EVENT_IDX only when configured.
let defaultFeaturesWithOurBackend: VirtioFeatures = [
    .version1, .vhostUserProtocolFeatures, .netMTU, .netStatus, .netMergeableRxBuffers, .ringIndirectDescriptors, .inOrder,
]

/// ``runLoopbackStream(device:stream:total:burstSize:window:macSwapped:queue:)`` on every queue
/// pair at once, one thread each; pair n's frames come from `stream(n)`, so a frame delivered
/// on the wrong pair fails the comparison. Results in pair order.
func runLoopbackStreamsOnEveryPair(
    device: VirtioUserDevice, total: UInt64, window: Int? = nil, stream: @escaping @Sendable (Int) -> FrameStream
) throws -> [(sent: UInt64, intact: UInt64, mismatched: UInt64)] {
    let results = Mutex<[Int: (sent: UInt64, intact: UInt64, mismatched: UInt64)]>([:])
    var threads: [DedicatedThread] = []
    for queue in 0..<device.queuePairCount {
        threads.append(try DedicatedThread(name: "pair-\(queue)") {
            let result = runLoopbackStream(device: device, stream: stream(queue), total: total, window: window, queue: queue)
            results.withLock { $0[queue] = result }
        })
    }
    for thread in threads { thread.join() }
    return results.withLock { all in (0..<device.queuePairCount).map { all[$0] ?? (0, 0, 0) } }
}

/// A test's own failure (a helper that could not set something up), as a thrown error.
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
