import VirtioCore
import Foundation
import VhostUserBackend
import VirtioUser

/// The end-of-run summary.
struct RunReport {
    let options: VirtioUserPMD
    let device: VirtioUserDevice
    let result: ForwardResult
    let backend: BackendStatistics?
    let captures: [PacketCapture]

    /// With the embedded loopback back-end, every frame sent must have come back.
    var loopbackIntact: Bool {
        guard let backend, options.backendMode == .loopback else { return true }
        let stats = device.statistics
        return stats.rx.packets == stats.tx.packets && stats.tx.errors == 0 && stats.rx.errors == 0
            && stats.tx.drops == 0 && stats.rx.drops == 0
            && backend.drops == 0 && backend.protocolErrors == 0
    }

    /// With `--verify`: no frame arrived corrupt.
    var verifiedIntact: Bool { (result.verdicts?.corrupt ?? 0) == 0 }

    func printSummary(linkAtEnd: VirtioUserDevice.LinkState) {
        let stats = device.statistics
        func rate(_ packets: UInt64, _ bytes: UInt64) -> String {
            let rate = Rate(packets: packets, bytes: bytes, seconds: result.seconds)
            return "\(format(rate.mpps, 2)) Mpps, \(format(rate.gbps, 2)) Gbit/s"
        }
        print("---- summary (\(format(result.seconds, 2)) s of forwarding) ----")
        print("  TX packets: \(stats.tx.packets)  bytes: \(stats.tx.bytes)  (\(rate(result.atEnd.tx.packets, result.atEnd.tx.bytes)))")
        print("  RX packets: \(stats.rx.packets)  bytes: \(stats.rx.bytes)  (\(rate(result.atEnd.rx.packets, result.atEnd.rx.bytes)))")
        print("  drops: TX \(stats.tx.drops)  RX \(stats.rx.drops)  forwarder \(result.forwardDrops)   errors: TX \(stats.tx.errors)  RX \(stats.rx.errors)")
        print("  TX ring full: \(stats.tx.ringFull)  RX no buffers: \(stats.rx.noBuffers)  kicks: TX \(stats.tx.kicks)  RX \(stats.rx.kicks)  sessions: \(device.connectionCount)")
        if let backend {
            print("  back-end: received \(backend.framesReceived), sent \(backend.framesSent), drops \(backend.drops), protocol errors \(backend.protocolErrors)")
        }
        if let verdicts = result.verdicts {
            print("  verify: \(verdicts.intact) intact, \(verdicts.corrupt) corrupt\(verdicts.corrupt == 0 ? "" : "  FAILED")")
        }
        for (queue, capture) in captures.enumerated() {
            print("  capture: pair \(queue): \(capture.framesWritten) frames in \(capture.path)")
        }
        print("  link at end: \(linkAtEnd)")
        if backend != nil && options.backendMode == .loopback {
            if loopbackIntact {
                print("  result: OK, TX = RX = \(stats.tx.packets), no errors")
            } else {
                print("  result: FAILED, TX \(stats.tx.packets) != RX \(stats.rx.packets) or errors were counted")
            }
        }
    }

    /// The summary as one JSON object (`--json`); the fields are those of the text summary.
    func json(linkAtEnd: VirtioUserDevice.LinkState) -> String {
        let stats = device.statistics
        func direction(_ queue: QueueStatistics, _ atEnd: QueueStatistics) -> Summary.Direction {
            let rate = Rate(packets: atEnd.packets, bytes: atEnd.bytes, seconds: result.seconds)
            return Summary.Direction(
                packets: queue.packets, bytes: queue.bytes, mpps: rate.mpps, gbps: rate.gbps,
                drops: queue.drops, errors: queue.errors, kicks: queue.kicks,
                ringFull: queue.ringFull, noBuffers: queue.noBuffers)
        }
        var link = "up"
        if case .down(let reason) = linkAtEnd { link = "down: \(reason)" }
        let summary = Summary(
            mode: options.forwardMode.rawValue, seconds: result.seconds, queuePairs: device.queuePairCount,
            features: device.negotiatedFeatures.description,
            tx: direction(stats.tx, result.atEnd.tx), rx: direction(stats.rx, result.atEnd.rx),
            forwarderDrops: result.forwardDrops, sessions: device.connectionCount, linkAtEnd: link,
            backend: backend.map {
                Summary.Backend(received: $0.framesReceived, sent: $0.framesSent, drops: $0.drops, protocolErrors: $0.protocolErrors)
            },
            captures: captures.enumerated().map { Summary.Capture(pair: $0.offset, path: $0.element.path, frames: $0.element.framesWritten) },
            verify: result.verdicts.map { Summary.Verify(intact: $0.intact, corrupt: $0.corrupt) },
            result: backend != nil && options.backendMode == .loopback ? (loopbackIntact ? "ok" : "failed") : nil)
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        guard let data = try? encoder.encode(summary) else { return "{}" }
        return String(decoding: data, as: UTF8.self)
    }

    /// What `--json` prints.
    struct Summary: Encodable {
        struct Direction: Encodable {
            var packets, bytes: UInt64
            var mpps, gbps: Double
            var drops, errors, kicks, ringFull, noBuffers: UInt64
        }
        struct Backend: Encodable {
            var received, sent, drops, protocolErrors: UInt64
        }
        struct Verify: Encodable {
            var intact, corrupt: UInt64
        }
        struct Capture: Encodable {
            var pair: Int
            var path: String
            var frames: UInt64
        }
        var mode: String
        var seconds: Double
        var queuePairs: Int
        var features: String
        var tx, rx: Direction
        var forwarderDrops: UInt64
        var sessions: Int
        var linkAtEnd: String
        var backend: Backend?
        var captures: [Capture]
        /// With `--verify`: received frames intact and corrupt; else null.
        var verify: Verify?
        /// "ok" or "failed" for the embedded loopback (every frame back, no errors), else null.
        var result: String?
    }
}
