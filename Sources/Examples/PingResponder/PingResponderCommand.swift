#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Logging
import Synchronization
import VirtioUser

/// Set by SIGINT/SIGTERM: stop answering and print the totals.
let stopRequested = Atomic<Bool>(false)

/// An example app on ``VirtioUserDevice``: a host that answers ARP and ping for one IPv4
/// address, with no kernel network stack of its own. Behind a `vhost-user-backend --mode tap`,
/// the kernel on the other side of the TAP can ping it.
@main
struct PingResponderCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping-responder",
        abstract: "Example app: answers ARP and ICMP echo (ping) for one IPv4 address through a virtio-user port.",
        discussion: """
        Connects to the vhost-user back-end at --socket (for example `vhost-user-backend --mode tap`, \
        which bridges to a Linux TAP) and answers ARP requests and echo requests for --ip; \
        everything else is counted and ignored. Sleeps while nothing arrives. Runs until \
        SIGINT/SIGTERM or --duration, then prints its totals. Exit status: 0; 2 on an error (a \
        one-line message on stderr); 64 for a bad or unknown option.
        """)

    @Option(help: "The back-end's socket.")
    var socket: String

    @Option(help: "The IPv4 address to answer for, such as 192.0.2.2.")
    var ip: String

    @Option(help: "Our MAC address (default: the back-end's, if it offers one, else a random local one).")
    var mac: String?

    @Option(help: "Seconds to run; 0 runs until SIGINT/SIGTERM.")
    var duration: Double = 0

    @Option(name: .customLong("log-level"), help: "Device log messages to stderr at this level and above (info: link up and down).")
    var logLevel: Logger.Level = .notice

    func validate() throws {
        guard Self.parseIPv4(ip) != nil else { throw ValidationError("--ip '\(ip)' is not an IPv4 address (a.b.c.d).") }
        if let mac, MACAddress(mac) == nil { throw ValidationError("--mac '\(mac)' is not a MAC address (aa:bb:cc:dd:ee:ff).") }
        guard duration >= 0 else { throw ValidationError("--duration must not be negative.") }
    }

    func run() throws {
        signal(SIGINT) { _ in stopRequested.store(true, ordering: .relaxed) }
        signal(SIGTERM) { _ in stopRequested.store(true, ordering: .relaxed) }
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "ping-responder")
        logger.logLevel = logLevel
        var configuration = VirtioUserDevice.Configuration(socketPath: socket)
        configuration.macAddress = mac.flatMap(MACAddress.init)
        configuration.logger = logger
        let device: VirtioUserDevice
        do throws(VirtioError) {
            device = try VirtioUserDevice(configuration: configuration)
            try device.start()
        } catch {
            let line = "ping-responder: error: \(error)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
            throw ExitCode(2)
        }
        defer { device.stop() }
        guard let address = Self.parseIPv4(ip) else { throw ValidationError("--ip '\(ip)' is not an IPv4 address (a.b.c.d).") }
        let responder = EchoResponder(address: address, mac: device.macAddress)
        print("ping-responder: answering for \(ip) at \(device.macAddress) on \(socket)")
        fflush(nil)
        let totals = answer(on: device, with: responder)
        print("answered \(totals.arp) ARP requests and \(totals.echo) echo requests; ignored \(totals.ignored) frames; \(totals.unsent) replies found no room")
        fflush(nil)
    }

    /// Receives, answers and transmits until stopped. Each answer is built in a scratch
    /// buffer and copied into a transmit buffer only when there is one to send (ping frames are
    /// small), so every received buffer goes straight back to the pool.
    private func answer(on device: VirtioUserDevice, with responder: EchoResponder) -> (arp: Int, echo: Int, ignored: Int, unsent: Int) {
        let rx = PacketBurst(capacity: 32)
        let tx = PacketBurst(capacity: 32)
        let scratchSize = VirtioUserDevice.maximumFrameLength
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: scratchSize, alignment: 8)
        defer { scratch.deallocate() }
        var arp = 0, echo = 0, ignored = 0, unsent = 0
        let clock = ContinuousClock()
        let deadline = duration > 0 ? clock.now.advanced(by: .seconds(duration)) : nil
        while !stopRequested.load(ordering: .relaxed), deadline.map({ clock.now < $0 }) ?? true {
            // Sleeps on the back-end's notification while nothing arrives.
            guard device.receive(into: rx, timeoutMilliseconds: 100) > 0 else { continue }
            for i in 0..<rx.count {
                let frame = rx[i]
                // A frame spread over several buffers (segments > 1, then its continuations
                // with 0) is larger than anything answered here.
                guard frame.segments == 1 else {
                    if frame.segments > 1 { ignored += 1 }
                    continue
                }
                let length: Int
                switch responder.answer(UnsafeRawBufferPointer(frame.bytes), into: scratch, capacity: scratchSize) {
                case .arpReply(let n):
                    arp += 1
                    length = n
                case .echoReply(let n):
                    echo += 1
                    length = n
                case .ignored:
                    ignored += 1
                    continue
                }
                guard device.allocate(into: tx, count: 1) == 1 else {
                    unsent += 1  // the burst or the pool is full: like a busy host, drop it
                    continue
                }
                var reply = tx[tx.count - 1]
                reply.data.copyMemory(from: scratch, byteCount: length)
                reply.length = length
                tx[tx.count - 1] = reply
            }
            device.release(rx)
            device.transmit(tx)
            // What the transmit ring had no room for is dropped, not kept for later.
            unsent += tx.count
            device.release(tx)
        }
        return (arp, echo, ignored, unsent)
    }

    static func parseIPv4(_ text: String) -> (UInt8, UInt8, UInt8, UInt8)? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map { UInt8($0) }
        guard parts.count == 4, let a = parts[0], let b = parts[1], let c = parts[2], let d = parts[3] else { return nil }
        return (a, b, c, d)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
