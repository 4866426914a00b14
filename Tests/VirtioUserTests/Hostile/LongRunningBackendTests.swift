import CAllocationCounter
import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// A back-end that runs for months meets front-ends by the thousand: what it keeps per
/// connection must be bounded, whatever they send.
final class LongRunningBackendTests: XCTestCase {
    /// 1,000 connections, each sending 500 requests, grow the process by less than 10 MiB, and
    /// the back-end remembers only the last connections' traces (under the sanitizers, which
    /// are slower and keep freed memory, 100 connections and the traces alone).
    func testThousandsOfChattyConnectionsKeepMemoryBounded() throws {
        let backend = try startBackend(self)
        let path = backend.configuration.socketPath
        let connections = allocation_counter_available() == 1 ? 1000 : 100
        func chat() throws {
            let channel = VhostUserChannel(socket: try UnixSocket.connect(to: path, retry: .init(timeoutMilliseconds: 5000)))
            for _ in 0..<499 { try channel.send(.setOwner, descriptors: []) }
            try channel.send(.getFeatures, descriptors: [])
            _ = try channel.receive(timeoutMilliseconds: 10_000)  // every request before it was handled
        }
        for _ in 0..<20 { try chat() }  // what any session leaves behind by design, in the baseline
        XCTAssertTrue(waitUntil { backend.statistics.connections == 20 && backend.requestTraces.count == 20 })
        let before = residentBytes()
        for _ in 0..<connections { try chat() }
        XCTAssertTrue(waitUntil(seconds: 30) { backend.statistics.connections == UInt64(20 + connections) })
        MonotonicClock.sleep(milliseconds: 200)
        let growth = residentBytes() - before
        print("long-running: \(connections) connections of 500 requests; resident memory grew \(growth / 1024) KiB")
        // Only without a sanitizer: ASan holds freed memory in quarantine (hundreds of MiB).
        if allocation_counter_available() == 1 { XCTAssertLessThan(growth, 10 << 20) }
        XCTAssertEqual(backend.requestTraces.count, VhostUserBackend.tracedConnections)
        XCTAssertEqual(backend.negotiations.count, VhostUserBackend.tracedConnections)
        XCTAssertEqual(backend.requestTraces.last?.count, 500)
        XCTAssertEqual(backend.statistics.protocolErrors, 0)
    }

    private func residentBytes() -> Int {
        let fields = ((try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? "").split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }
}
