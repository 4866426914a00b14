import Foundation
import VirtioUser
import VirtioUserIP
import XCTest

/// What the IP tests share: our interface (192.0.2.2/24) on a device behind a TAP back-end in
/// a namespace, the kernel's side in that namespace, example processes, a digest.
extension XCTestCase {
    /// Our interface on a device behind a fresh TAP back-end; closed when the test ends.
    func ourInterface() throws -> (KernelSide, IPInterface) {
        let (kernel, interface, _) = try ourInterface(ipv6: false)
        return (kernel, interface)
    }

    /// The same, with the TAP's name (for IPv6 link-local scopes), IPv6 on in the namespace
    /// when asked, and the device's offloads.
    func ourInterface(ipv6: Bool, offloads: VirtioUserDevice.Offloads = []) throws -> (KernelSide, IPInterface, String) {
        let tap = try tapBackendInNamespace(self, ipv6: ipv6)
        let kernel = KernelSide(namespace: tap.namespace)
        var configuration = VirtioUserDevice.Configuration(socketPath: tap.backend.configuration.socketPath)
        configuration.offloads = offloads
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        addTeardownBlock { device.stop() }
        let interface = try IPInterface(device: device, configuration: .init(address: IPAddress(192, 0, 2, 2), prefixLength: 24))
        addTeardownBlock { interface.close() }
        return (kernel, interface, tap.tap)
    }

    /// The first connection `listener` accepts while `client` runs, or nil when the client
    /// ended first (it could not connect): the listener is closed then, so a broken path fails
    /// the test instead of hanging it.
    func acceptOne(_ listener: TCPListener, whileRunning client: Task<String, Error>) async throws -> TCPConnection {
        Task {
            _ = try? await client.value
            listener.close()
        }
        var iterator = listener.makeAsyncIterator()
        guard let connection = try await iterator.next() else {
            throw TestFailure("no connection: the client ended with \(await client.result)")
        }
        return connection
    }

    func launchExample(_ product: String, _ arguments: [String]) throws {
        let process = try launchProduct(product, arguments)
        addTeardownBlock { if process.isRunning { process.terminate() }; process.waitUntilExit() }
    }

    /// Tries `body` every 100 ms for up to 10 s until it returns true.
    func retry(_ body: @escaping () async throws -> Bool) async throws -> Bool {
        for _ in 0..<100 {
            if (try? await body()) == true { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}

/// The kernel's side: programs run in the TAP's namespace.
struct KernelSide: Sendable {
    let namespace: String
    let script = repositoryRoot.appendingPathComponent("Tests/IPClients/ip_client.py").path

    /// ip_client.py's output (trimmed); throws when it fails.
    func client(_ arguments: [String]) async throws -> String {
        try await run(["python3", script] + arguments)
    }

    /// ``client(_:)`` in a task of its own (for ``XCTestCase/acceptOne(_:whileRunning:)``),
    /// ended after `seconds` by `timeout` when given.
    func clientTask(_ arguments: [String], endingAfter seconds: Int? = nil) -> Task<String, Error> {
        let command = (seconds.map { ["timeout", "\($0)"] } ?? []) + ["python3", script] + arguments
        return Task { try await run(command) }
    }

    /// Runs a program in the namespace on a thread of its own (never blocking the cooperative
    /// pool our server tasks run on); its output, trimmed.
    func run(_ command: [String]) async throws -> String {
        let arguments = ["netns", "exec", namespace] + command
        return try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                do {
                    let result = try runProgram("/usr/sbin/ip", arguments)
                    guard result.status == 0 else {
                        throw TestFailure("\(command.prefix(3).joined(separator: " ")) exited \(result.status): \(result.errors)")
                    }
                    continuation.resume(returning: result.output.trimmingCharacters(in: .whitespacesAndNewlines))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }
}

func XCTUnwrapAsync<T>(_ value: T?, file: StaticString = #filePath, line: UInt = #line) async throws -> T {
    try XCTUnwrap(value, file: file, line: line)
}

/// SHA-256 of a stream, by coreutils' sha256sum (no hashing code of ours to get wrong).
/// Used by one task or event loop at a time (the NIO tests hand it to a handler).
final class SHA256Pipe: @unchecked Sendable {
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        process.standardInput = input
        process.standardOutput = output
        try process.run()
    }

    func update(_ bytes: [UInt8]) throws {
        try input.fileHandleForWriting.write(contentsOf: bytes)
    }

    /// The hex digest.
    func finish() throws -> String {
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return String(text.prefix { $0 != " " })
    }
}

extension SplitMix64 {
    /// Overwrites `bytes` with the next of the stream (the outbound transfer's content).
    mutating func fill(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { raw in
            for i in 0..<(raw.count / 8) { raw.storeBytes(of: next(), toByteOffset: i * 8, as: UInt64.self) }
        }
    }
}
