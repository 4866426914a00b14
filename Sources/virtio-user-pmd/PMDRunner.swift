#if canImport(Glibc)
import VirtioCore
import Glibc
#endif
import Logging
import VhostUserBackend
import VirtioUser

/// One run: set up the back-end (embedded or not) and the device, forward, report.
struct PMDRunner {
    let options: VirtioUserPMD

    /// Returns false when the embedded loopback lost frames or `--verify` found a corrupt one
    /// (the failures that are not errors of set-up).
    func run() throws -> Bool {
        var backend: VhostUserBackend?
        var directory: String?
        let socketPath: String
        let info = try options.deviceInfo.map { path throws(VirtioError) in try DeviceInfo(contentsOfFile: path, interface: options.interface) }
        let server = info.map { $0.connectionMode == .server } ?? options.server
        if let path = info?.socketPath ?? options.socket {
            socketPath = path
            if (options.socketMode != nil || options.socketGroup != nil) && !server {
                throw VirtioError.configuration(InvalidSetting(
                    field: "--socket-mode/--socket-group", value: options.deviceInfo ?? "", requirement: "a device-info file in server mode: in client mode the back-end owns the socket"))
            }
        } else {
            let dir = try makePrivateDirectory()
            directory = dir
            socketPath = dir + "/vhost.sock"
            var backendConfiguration = VhostUserBackend.Configuration(socketPath: socketPath, mode: options.backendMode)
            backendConfiguration.logger = logger("virtio-user-pmd.backend")
            backendConfiguration.queuePairs = max(backendConfiguration.queuePairs, options.queues)
            if let cpu = options.backendCPU {
                backendConfiguration.onServingThreadStart = {
                    do throws(VirtioError) { try DedicatedThread.pinCurrentThread(to: cpu) } catch {
                        Console.error("virtio-user-pmd: warning: back-end not pinned: \(error)")
                    }
                }
            }
            let embedded = try VhostUserBackend(configuration: backendConfiguration)
            try embedded.start()
            backend = embedded
        }
        defer {
            backend?.stop()
            if let directory { _ = rmdir(directory) }
        }

        var configuration = VirtioUserDevice.Configuration(socketPath: socketPath)
        configuration.queueSize = options.queueSize
        configuration.burstSize = options.burst
        configuration.queuePairs = options.queues
        configuration.mergeableReceiveBuffers = !options.noMergeable
        configuration.indirectDescriptors = !options.noIndirect
        configuration.eventIndex = options.eventIndex
        configuration.inOrder = options.inOrder
        configuration.packedRing = options.packed
        configuration.offloads = (try? options.parsedOffloads()) ?? []
        configuration.macAddress = options.mac.flatMap(MACAddress.init)
        configuration.mtu = options.mtu
        configuration.memory = options.hugepages ? .hugepages2M : .memfd
        configuration.connectTimeoutMilliseconds = options.connectTimeout
        configuration.connectionMode = server ? .server : .client
        configuration.socketAccess = SocketFileAccess(mode: options.socketMode.flatMap(SocketFileAccess.parseMode), group: options.socketGroup)
        configuration.reconnectTimeoutMilliseconds = options.reconnectTimeout
        configuration.logger = logger("virtio-user-pmd.device")
        let device = try VirtioUserDevice(configuration: configuration)
        if let reason = device.memoryFallbackReason {
            Console.error("virtio-user-pmd: warning: \(reason)")
        }
        try device.start()
        let backendName = (backend == nil ? socketPath : nil).map { "vhost-user back-end \(server ? "connected to our" : "at") \($0)" }
            ?? "embedded Swift back-end (\(options.backendMode.rawValue))"
        if !options.json {
            print("virtio-user-pmd: \(options.forwardMode.rawValue), frame \(options.pktSize) B, burst \(options.burst), queue \(options.queueSize), \(options.queues) queue pair(s)")
            print("  device \(device.macAddress), MTU \(device.mtu), memory \(device.memoryBacking), \(device.sharedMemoryBytes >> 10) KiB in one region")
            print("  peer: \(backendName), features \(device.negotiatedFeatures), protocol features \(device.protocolFeatures)")
            if backend != nil && options.backendMode == .loopback && (options.forwardMode == .io || options.forwardMode == .macswap) && !options.txFirst {
                print("  note: \(options.forwardMode.rawValue) against a loopback back-end moves nothing without --tx-first")
            }
        }

        let captures = try startCaptures(device)
        let forwarder = Forwarder(device: device, options: options)
        let result = try forwarder.run()
        let linkAtEnd = device.linkState
        device.stop()
        for (queue, capture) in captures.enumerated() {
            device.stopCapture(queue: queue)
            try capture.close()
        }

        let report = RunReport(options: options, device: device, result: result, backend: backend?.statistics, captures: captures)
        if options.json {
            print(report.json(linkAtEnd: linkAtEnd))
        } else {
            report.printSummary(linkAtEnd: linkAtEnd)
        }
        if case .down(let reason) = linkAtEnd {
            throw LinkWentDown(reason: reason)
        }
        return report.loopbackIntact && report.verifiedIntact
    }

    private func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = options.logLevel
        return logger
    }

    /// `--pcap FILE`: a capture per queue pair, pair n > 0 in FILE with "-n" before its extension.
    private func startCaptures(_ device: VirtioUserDevice) throws(VirtioError) -> [PacketCapture] {
        guard let path = options.pcap else { return [] }
        var captures: [PacketCapture] = []
        for queue in 0..<options.queues {
            let capture = try PacketCapture(path: queue == 0 ? path : Self.path(path, pair: queue))
            try device.startCapture(capture, queue: queue)
            captures.append(capture)
        }
        return captures
    }

    static func path(_ path: String, pair: Int) -> String {
        let slash = path.lastIndex(of: "/")
        if let dot = path.lastIndex(of: "."), slash.map({ $0 < dot }) ?? true {
            return String(path[..<dot]) + "-\(pair)" + String(path[dot...])
        }
        return path + "-\(pair)"
    }

    private func makePrivateDirectory() throws(VirtioError) -> String {
        var template = Array("/tmp/virtio-user-pmd.XXXXXX".utf8CString)
        guard let result = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw VirtioError.system("mkdtemp in /tmp", errno: errno, hint: "Is /tmp writable?")
        }
        return String(cString: result)
    }
}
