#if canImport(Glibc)
import VirtioCore
import Glibc
#endif
import ArgumentParser
import Logging
import VhostUserBackend
import VirtioUser

@main
struct VirtioUserPMD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "virtio-user-pmd",
        abstract: "Move Ethernet frames through a VirtioUserDevice, like dpdk-testpmd with one virtio-user port.",
        discussion: """
        Without --socket, an embedded Swift vhost-user back-end in loopback mode serves the device on \
        a private temporary socket, so the run needs nothing else. With --socket, the device connects \
        to the back-end listening there (for example dpdk-testpmd --vdev net_vhost0,iface=PATH).

        Forward modes: txonly generates frames (frames that come back are counted and freed); rxonly \
        counts and frees what arrives; io sends every received frame back; macswap swaps the MAC \
        addresses first. io and macswap need traffic from the peer, or --tx-first.

        Prints a stats line every --stats-period seconds and a summary at the end (--json: the summary \
        alone, as JSON). Exit status: 0 on success; 1 when the embedded loopback back-end did not return \
        every frame, or errors were counted; 2 on any other error (a one-line message on stderr); 64 for \
        a bad or unknown option.
        """)

    @Option(help: "vhost-user socket of a listening back-end (with --server: ours). A path (longer than 107 bytes is fine), @NAME for an abstract socket, or DIR/ for the one socket a back-end will put in DIR. Default: an embedded loopback back-end.")
    var socket: String?

    @Option(name: .customLong("device-info"), help: "Take the socket and who listens from a Kubernetes device-info file (type vhost-user; \"mode\": \"server\" means we listen), or from a network-status annotation's JSON list. Instead of --socket and --server.")
    var deviceInfo: String?

    @Option(help: "With --device-info naming a network-status list: the interface (such as net1) whose device-info to use. Default: the only vhost-user one.")
    var interface: String?

    @Option(name: .customLong("forward-mode"), help: "txonly, rxonly, io or macswap.")
    var forwardMode: ForwardMode = .txonly

    @Option(help: "Seconds to run (SIGINT ends a run early, with its summary).")
    var duration: Double = 5

    @Option(help: "Frames per burst (1…queue size).")
    var burst: Int = 32

    @Option(name: .customLong("pkt-size"), help: "Frame length in bytes for txonly, without FCS (60…65535). Frames over 2048 bytes (jumbo) go out as chains of buffers; to come back they need mergeable receive buffers.")
    var pktSize: Int = 64

    @Flag(help: "Stamp each txonly frame's payload with a sequence number and a pattern, and check every frame received against it: the summary counts frames intact and corrupt, and a corrupt one makes the exit status 1.")
    var verify = false

    @Option(name: .customLong("queue-size"), help: "Virtqueue size: a power of two, 64…32768.")
    var queueSize: Int = 256

    @Option(help: "Queue pairs (1…64; more than 1 needs a back-end with MQ, e.g. DPDK net_vhost0,…,queues=N). A forwarding thread each, unless --threads says fewer.")
    var queues: Int = 1

    @Flag(help: "Back the shared memory with 2 MiB hugepages (falls back to normal pages, with a warning, when none are reserved).")
    var hugepages = false

    @Flag(name: .customLong("tx-first"), help: "In io/macswap mode, send one burst first to start traffic.")
    var txFirst = false

    @Option(help: "Our MAC address (aa:bb:cc:dd:ee:ff). Default: the back-end's when it serves one in its config space, else random and locally administered.")
    var mac: String?

    @Option(help: "Our MTU (68…65535), announced to the back-end with NET_SET_MTU when it supports VIRTIO_NET_F_MTU. Default: the back-end's, else 1500.")
    var mtu: Int?

    @Option(name: .customLong("peer-mac"), help: "Destination MAC of txonly frames.")
    var peerMAC: String = "02:00:00:00:00:02"

    @Option(name: .customLong("stats-period"), help: "Seconds between stats lines; 0 for none.")
    var statsPeriod: Double = 1

    @Option(name: .customLong("connect-timeout"), help: "Milliseconds to wait for the back-end at start: retrying the connection, or with --server waiting for it to connect.")
    var connectTimeout: Int = 5000

    @Flag(help: "Listen on --socket and let the back-end connect (DPDK vhost with client=1, OVS dpdkvhostuserclient ports).")
    var server = false

    @Option(name: .customLong("socket-mode"), help: "With --server: permission bits of the socket file, in octal (such as 660), for a back-end running as another user.")
    var socketMode: String?

    @Option(name: .customLong("socket-group"), help: "With --server: group (name or number) of the socket file: with --socket-mode 660, its members may connect.")
    var socketGroup: String?

    @Option(name: .customLong("reconnect-timeout"), help: "Milliseconds to keep reconnecting after the back-end goes away (client mode; a server waits for the whole run).")
    var reconnectTimeout: Int = 30_000

    @Flag(name: .customLong("no-mergeable"), help: "Do not negotiate mergeable receive buffers (DPDK: mrg_rxbuf=0).")
    var noMergeable = false

    @Flag(name: .customLong("no-indirect"), help: "Do not negotiate indirect descriptors.")
    var noIndirect = false

    @Flag(name: .customLong("in-order"), inversion: .prefixedNo, help: "Negotiate VIRTIO_F_IN_ORDER when the back-end offers it (DPDK: in_order=1, its default too): transmit completions are taken from the used index alone. Not with packed rings.")
    var inOrder = true

    @Flag(name: .customLong("packed"), help: "Negotiate packed virtqueues, VIRTIO_F_RING_PACKED (DPDK: packed_vq=1); split rings when the back-end does not offer them. IN_ORDER is not negotiated with packed rings.")
    var packed = false

    @Flag(name: .customLong("event-idx"), help: "Negotiate VIRTIO_RING_F_EVENT_IDX (DPDK's virtio-user never does). Off by default: it measured slower against DPDK's vhost when polling.")
    var eventIndex = false

    @Option(help: "Offloads to negotiate, comma-separated: csum, guest-csum, tso4, tso6, guest-tso4, guest-tso6. Default: none.")
    var offloads: String?

    @Option(name: .customLong("rx-wait"), help: "rxonly/io/macswap: when nothing has arrived, sleep on the back-end's call notification for up to this many milliseconds instead of polling (interrupt mode; needs one thread per queue pair). 0 polls.")
    var rxWait: Int = 0

    @Option(name: .customLong("backend-mode"), help: "Embedded back-end's mode: loopback or sink.")
    var backendMode: BackendMode = .loopback

    @Option(help: "Forwarding threads (1…--queues; default: one per queue pair). Thread t polls pairs t, t+T, t+2T, …")
    var threads: Int?

    @Option(help: "Pin forwarding threads to CPUs: the first --cpu for thread 0, the second for thread 1, … (repeat the option).")
    var cpu: [Int] = []

    @Option(name: .customLong("backend-cpu"), help: "Pin the embedded back-end's thread to this CPU.")
    var backendCPU: Int?

    @Option(help: "Write every frame each queue pair sends and receives to this pcap file (tshark, tcpdump and Wireshark read it). With --queues N, pair n > 0 writes FILE with -n before its extension.")
    var pcap: String?

    @Flag(help: "Print the summary as one JSON object on stdout, and nothing else there (no header, no stats lines).")
    var json = false

    @Flag(inversion: .prefixedNo, help: "A live progress line on stderr, rewritten 4 times a second (default: on when stderr is a terminal and the run lasts 10 s or more).")
    var progress: Bool?

    @Option(name: .customLong("log-level"), help: "Control-path log messages to stderr at this level and above: trace, debug, info (link up/down, negotiation), notice, warning, error, critical.")
    var logLevel: Logger.Level = .warning

    func validate() throws {
        guard duration > 0, duration <= 86_400 else { throw ValidationError("--duration must be more than 0 and at most 86400 seconds.") }
        guard (60...VirtioUserDevice.maximumChainedFrameLength).contains(pktSize) else {
            throw ValidationError("--pkt-size must be 60…\(VirtioUserDevice.maximumChainedFrameLength).")
        }
        guard statsPeriod >= 0 else { throw ValidationError("--stats-period must not be negative.") }
        guard (64...32768).contains(queueSize), queueSize & (queueSize - 1) == 0 else {
            throw ValidationError("--queue-size must be a power of two from 64 to 32768; \(queueSize) was given.")
        }
        guard (1...queueSize).contains(burst) else { throw ValidationError("--burst must be 1…\(queueSize) (the queue size).") }
        let buffersPerFrame = FrameTemplate.buffers(forFrameLength: pktSize)
        guard burst >= buffersPerFrame else {
            throw ValidationError("--pkt-size \(pktSize) takes \(buffersPerFrame) buffers a frame: --burst must be at least \(buffersPerFrame).")
        }
        if let mac, MACAddress(mac) == nil { throw ValidationError("--mac '\(mac)' is not a MAC address (aa:bb:cc:dd:ee:ff).") }
        if MACAddress(peerMAC) == nil { throw ValidationError("--peer-mac '\(peerMAC)' is not a MAC address.") }
        if let mtu, !(VirtioNetMTU.minimum...VirtioNetMTU.maximum).contains(mtu) {
            throw ValidationError("--mtu must be \(VirtioNetMTU.minimum)…\(VirtioNetMTU.maximum).")
        }
        if socket != nil && backendMode != .loopback { throw ValidationError("--backend-mode applies only to the embedded back-end (without --socket).") }
        if deviceInfo != nil && (socket != nil || server) {
            throw ValidationError("--device-info gives the socket and who listens: leave out --socket and --server.")
        }
        if interface != nil && deviceInfo == nil { throw ValidationError("--interface picks an entry of a --device-info network-status list; give --device-info.") }
        if server && socket == nil { throw ValidationError("--server needs --socket: the path to listen on.") }
        if let socketMode, SocketFileAccess.parseMode(socketMode) == nil {
            throw ValidationError("--socket-mode '\(socketMode)' is not octal permission bits (such as 660).")
        }
        if (socketMode != nil || socketGroup != nil) && !server && deviceInfo == nil {
            throw ValidationError("--socket-mode and --socket-group set the socket we listen on: they need --server (or a device-info file in server mode).")
        }
        guard connectTimeout >= 0, reconnectTimeout >= 0 else { throw ValidationError("Timeouts must not be negative.") }
        guard (1...VirtioUserDevice.maximumQueuePairs).contains(queues) else {
            throw ValidationError("--queues must be 1…\(VirtioUserDevice.maximumQueuePairs).")
        }
        guard rxWait >= 0 else { throw ValidationError("--rx-wait must not be negative.") }
        if rxWait > 0 && (threads ?? queues) != queues {
            throw ValidationError("--rx-wait needs one forwarding thread per queue pair: a thread asleep on one pair would starve the others.")
        }
        _ = try parsedOffloads()
        if let threads, !(1...queues).contains(threads) { throw ValidationError("--threads must be 1…\(queues) (the queue pairs).") }
        guard cpu.count <= (threads ?? queues) else {
            throw ValidationError("\(cpu.count) --cpu values for \(threads ?? queues) forwarding thread(s): give at most one per thread.")
        }
    }

    /// `--progress`, or by default: a terminal on stderr and a run of 10 s or more.
    var showsProgress: Bool { progress ?? (Console.errorIsTerminal && duration >= 10) }

    /// `--offloads` as the device's option set.
    func parsedOffloads() throws -> VirtioUserDevice.Offloads {
        guard let offloads else { return [] }
        let names: [String: VirtioUserDevice.Offloads] = [
            "csum": .transmitChecksum, "guest-csum": .receiveChecksum, "tso4": .transmitSegmentation4,
            "tso6": .transmitSegmentation6, "guest-tso4": .receiveSegmentation4, "guest-tso6": .receiveSegmentation6,
        ]
        var result: VirtioUserDevice.Offloads = []
        for name in offloads.split(separator: ",") {
            guard let offload = names[String(name)] else {
                throw ValidationError("--offloads: unknown '\(name)'; known: \(names.keys.sorted().joined(separator: ", ")).")
            }
            result.insert(offload)
        }
        return result
    }

    func run() throws {
        installInterruptHandlers()
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        do {
            let outcome = try PMDRunner(options: self).run()
            if !outcome { throw ExitCode(1) }
        } catch let error as VirtioError {
            Console.error("virtio-user-pmd: error: \(error)")
            throw ExitCode(2)
        } catch let error as LinkWentDown {
            Console.error("virtio-user-pmd: error: \(error)")
            throw ExitCode(2)
        }
    }
}

extension BackendMode: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}
