import VhostUserBackend
import VirtioUser

/// The end-of-run summary.
struct RunReport {
    let options: VirtioUserPMD
    let device: VirtioUserDevice
    let result: ForwardResult
    let backend: BackendStatistics?

    /// With the embedded loopback back-end, every frame sent must have come back.
    var loopbackIntact: Bool {
        guard let backend, options.backendMode == .loopback else { return true }
        let stats = device.statistics
        return stats.rx.packets == stats.tx.packets && stats.tx.errors == 0 && stats.rx.errors == 0
            && stats.tx.drops == 0 && stats.rx.drops == 0
            && backend.drops == 0 && backend.protocolErrors == 0
    }

    func printSummary(linkAtEnd: VirtioUserDevice.LinkState) {
        let stats = device.statistics
        let seconds = max(result.seconds, 1e-9)
        func rate(_ packets: UInt64, _ bytes: UInt64) -> String {
            "\(format(Double(packets) / seconds / 1e6, 2)) Mpps, \(format(Double(bytes) * 8 / seconds / 1e9, 2)) Gbit/s"
        }
        print("---- summary (\(format(result.seconds, 2)) s of forwarding) ----")
        print("  TX packets: \(stats.tx.packets)  bytes: \(stats.tx.bytes)  (\(rate(result.atEnd.tx.packets, result.atEnd.tx.bytes)))")
        print("  RX packets: \(stats.rx.packets)  bytes: \(stats.rx.bytes)  (\(rate(result.atEnd.rx.packets, result.atEnd.rx.bytes)))")
        print("  drops: TX \(stats.tx.drops)  RX \(stats.rx.drops)  forwarder \(result.forwardDrops)   errors: TX \(stats.tx.errors)  RX \(stats.rx.errors)")
        print("  TX ring full: \(stats.tx.ringFull)  RX no buffers: \(stats.rx.noBuffers)  kicks: TX \(stats.tx.kicks)  RX \(stats.rx.kicks)  sessions: \(device.connectionCount)")
        if let backend {
            print("  back-end: received \(backend.framesReceived), sent \(backend.framesSent), drops \(backend.drops), protocol errors \(backend.protocolErrors)")
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
}
