import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// The reference front-end against our back-ends: QEMU (Debian's qemu-system-x86, under TCG)
/// with a Linux guest whose virtio_net driver is served by our vhost-user back-end or switch.
/// Each test boots one guest (Scripts/qemu-guest.sh) with a scenario script.
final class QEMUGuestTests: XCTestCase {
    static let responderIP = "192.0.2.2"
    static let responderMAC = "02:00:00:00:00:02"

    // MARK: Loopback

    /// Every frame the guest sends comes back to it: the guest's counters and the back-end's
    /// agree frame for frame and byte for byte, QEMU's message order (rings disabled before
    /// SET_FEATURES) is served without a protocol error, and QEMU has nothing to warn about.
    func testGuestFramesComeBackThroughOurLoopbackBackEnd() throws {
        let backend = try startBackend(self) { $0.offeredProtocolFeatures.remove(.config) }
        let guest = try QEMUGuest(self, socket: backend.configuration.socketPath, scenario: """
            \(GuestScript.up)
            arp -s 192.0.2.99 02:00:00:00:00:99
            ping -c 50 -i 0.02 -W 1 192.0.2.99
            sleep 1
            \(GuestScript.counters)
            """)
        XCTAssertEqual(guest.waitForExit(), 0, guest.console)
        XCTAssertEqual(guest.value("tx_packets"), 50, guest.console)
        XCTAssertEqual(guest.value("rx_packets"), 50)
        XCTAssertEqual(guest.value("rx_bytes"), guest.value("tx_bytes"))
        XCTAssertEqual(guest.value("rx_dropped"), 0)
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 }, "the back-end saw QEMU go")
        let statistics = backend.statistics
        XCTAssertEqual(statistics.framesReceived, 50)
        XCTAssertEqual(statistics.framesSent, 50)
        XCTAssertEqual(statistics.bytesReceived, UInt64(guest.value("tx_bytes") ?? -1))
        XCTAssertEqual(statistics.protocolErrors, 0, statistics.lastError.map { "\($0)" } ?? "")
        XCTAssertEqual(guest.qemuMessages, [], "QEMU warned")
        print("qemu: loopback: guest sent \(guest.value("tx_packets") ?? -1) and received \(guest.value("rx_packets") ?? -1) frames; back-end received \(statistics.framesReceived), sent \(statistics.framesSent), protocol errors \(statistics.protocolErrors)")
        let trace = backend.requestTraces[0]
        let firstEnable = try XCTUnwrap(trace.firstIndex(of: "SET_VRING_ENABLE"), "\(trace)")
        let firstFeatures = try XCTUnwrap(trace.firstIndex(of: "SET_FEATURES"), "\(trace)")
        XCTAssertLessThan(firstEnable, firstFeatures, "QEMU's order, which the back-end used to refuse: \(trace)")
    }

    /// Two queue pairs (mq=on, a guest CPU per pair): a ping pinned to each CPU leaves on that
    /// CPU's queue, and each pair's frames come back on it.
    func testTwoQueuePairsEachCarryTheirCPUsFrames() throws {
        let backend = try startBackend(self) { $0.offeredProtocolFeatures.remove(.config) }
        let guest = try QEMUGuest(self, socket: backend.configuration.socketPath, scenario: """
            \(GuestScript.up)
            echo "GUEST: rx_queues $(ls -d /sys/class/net/eth0/queues/rx-* | wc -l)"
            arp -s 192.0.2.99 02:00:00:00:00:99
            taskset 1 ping -c 20 -i 0.02 -W 1 192.0.2.99
            taskset 2 ping -c 20 -i 0.02 -W 1 192.0.2.99
            sleep 1
            \(GuestScript.counters)
            """, queues: 2)
        XCTAssertEqual(guest.waitForExit(), 0, guest.console)
        XCTAssertEqual(guest.value("rx_queues"), 2, guest.console)
        XCTAssertEqual(guest.value("tx_packets"), 40)
        XCTAssertEqual(guest.value("rx_packets"), 40)
        XCTAssertTrue(waitUntil { backend.requestTraces.count == 1 })
        let statistics = backend.statistics
        XCTAssertEqual(statistics.protocolErrors, 0, statistics.lastError.map { "\($0)" } ?? "")
        XCTAssertTrue(backend.negotiations.first?.features.contains(.netMultiqueue) == true)
        let perPair = statistics.framesReceivedByQueuePair
        print("qemu: mq=on, 2 pairs: back-end received per pair \(perPair.prefix(2).map(String.init).joined(separator: "/")), sent \(statistics.framesSentByQueuePair.prefix(2).map(String.init).joined(separator: "/"))")
        XCTAssertEqual(perPair.prefix(2).reduce(0, +), 40, "\(perPair)")
        XCTAssertGreaterThan(perPair.count > 1 ? perPair[1] : 0, 0, "pair 1 carried nothing: \(perPair)")
        XCTAssertGreaterThan(perPair.first ?? 0, 0, "pair 0 carried nothing: \(perPair)")
        XCTAssertEqual(statistics.framesSentByQueuePair.prefix(2), perPair.prefix(2))
    }

    // MARK: Through the switch to ping-responder

    /// The guest resolves and pings ping-responder (a device of ours in another process)
    /// through vhost-user-switch: ARP, then 100 echo requests, all answered.
    func testGuestPingsPingResponderThroughTheSwitch() throws {
        try pingThroughSwitch(netOptions: nil, count: 100)
    }

    func testPackedRingThroughTheSwitch() throws {
        try pingThroughSwitch(netOptions: "packed=on", count: 50, expect: .ringPacked)
    }

    func testWithoutMergeableReceiveBuffersThroughTheSwitch() throws {
        try pingThroughSwitch(netOptions: "mrg_rxbuf=off", count: 50, expectAbsent: .netMergeableRxBuffers)
    }

    func testWithoutEventIndexThroughTheSwitch() throws {
        try pingThroughSwitch(netOptions: "event_idx=off", count: 50, expectAbsent: .ringEventIndex)
    }

    func testWithoutIndirectDescriptorsThroughTheSwitch() throws {
        try pingThroughSwitch(netOptions: "indirect_desc=off", count: 50, expectAbsent: .ringIndirectDescriptors)
    }

    /// The guest unloads virtio_net and loads it again (a virtio reset: QEMU stops the rings
    /// with GET_VRING_BASE and starts them afresh on the same connection); pings work before
    /// and after.
    func testGuestDriverReloadedKeepsWorking() throws {
        let (fabric, guestPort) = try switchWithResponder()
        let guest = try QEMUGuest(self, socket: guestPort, scenario: """
            \(GuestScript.up)
            \(GuestScript.waitForPing(Self.responderIP))
            ping -c 10 -i 0.02 \(Self.responderIP)
            rmmod virtio_net
            echo "GUEST: interfaces after unload $(ls /sys/class/net | grep -c eth0)"
            insmod /modules/virtio_net.ko
            i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
            \(GuestScript.up)
            \(GuestScript.waitForPing(Self.responderIP))
            ping -c 10 -i 0.02 \(Self.responderIP)
            """)
        XCTAssertEqual(guest.waitForExit(), 0, guest.console)
        XCTAssertEqual(guest.value("interfaces after unload"), 0, guest.console)
        let summaries = guest.pingSummaries
        XCTAssertEqual(summaries.count, 2, guest.console)
        XCTAssertTrue(summaries.allSatisfy { $0.transmitted == 10 && $0.received == 10 }, "\(summaries)")
        XCTAssertEqual(fabric.statistics[0].protocolErrors, 0)
        XCTAssertEqual(fabric.statistics[0].connections, 1, "the reload is a reset on the same connection")
        print("qemu: driver reload: \(summaries.map { "\($0.received)/\($0.transmitted)" }.joined(separator: " before, ")) after; sessions \(fabric.statistics[0].connections)")
    }

    /// vhost-user-switch is killed (SIGKILL) while the guest runs and started again 4 s later; QEMU
    /// (chardev reconnect=1) and ping-responder reconnect by themselves, and pings flow again.
    func testBackEndKilledAndRestartedUnderQEMUsReconnect() throws {
        let guestPort = try makeSocketPath(self, name: "guest.sock")
        let responderPort = try makeSocketPath(self, name: "responder.sock")
        var fabric = try launchSwitchProcess(ports: [guestPort, responderPort])
        let responder = try launchResponder(socket: responderPort)
        _ = responder
        let guest = try QEMUGuest(self, socket: guestPort, scenario: """
            \(GuestScript.up)
            \(GuestScript.waitForPing(Self.responderIP))
            ping -c 5 -i 0.05 \(Self.responderIP)
            echo "GUEST: kill now"
            sleep 1
            i=0
            until ping -c 1 -W 1 \(Self.responderIP) >/dev/null 2>&1; do
              i=$((i + 1)); [ $i -ge 90 ] && break
            done
            echo "GUEST: pings lost while the back-end was away $i"
            ping -c 20 -i 0.05 \(Self.responderIP)
            """, reconnectSeconds: 1)
        XCTAssertTrue(guest.waitFor("GUEST: kill now"), guest.console)
        kill(fabric.processIdentifier, SIGKILL)
        fabric.waitUntilExit()
        // Away long enough for the guest's pings to go unanswered (it starts after 1 s).
        MonotonicClock.sleep(milliseconds: 4000)
        fabric = try launchSwitchProcess(ports: [guestPort, responderPort])
        XCTAssertEqual(guest.waitForExit(), 0, guest.console)
        let summaries = guest.pingSummaries
        XCTAssertEqual(summaries.count, 2, guest.console)
        XCTAssertEqual(summaries.first?.received, 5, guest.console)
        XCTAssertEqual(summaries.last?.transmitted, 20, guest.console)
        XCTAssertEqual(summaries.last?.received, 20, guest.console)
        XCTAssertGreaterThan(guest.value("pings lost while the back-end was away") ?? 0, 0, "the back-end was really gone")
        print("qemu: reconnect: \(summaries.first?.received ?? 0)/5 before the kill, \(guest.value("pings lost while the back-end was away") ?? -1) one-second pings lost, \(summaries.last?.received ?? 0)/20 after the restart")
        fabric.terminate()
        fabric.waitUntilExit()
    }

    // MARK: Through a TAP to the kernel

    /// host_mtu=9000: the guest's MTU is 9000, and 8,000-byte pings cross our tap-mode back-end
    /// to a kernel whose TAP has the same MTU, and are answered.
    func testJumboPingsWithHostMTU9000() throws {
        let tap = try tapBackendInNamespace(self) {
            $0.offeredProtocolFeatures.remove(.config)
            $0.mtu = 9000
        }
        try runIP(["-n", tap.namespace, "link", "set", tap.tap, "mtu", "9000"])
        let guest = try QEMUGuest(self, socket: tap.backend.configuration.socketPath, scenario: """
            \(GuestScript.up)
            echo "GUEST: mtu $(cat /sys/class/net/eth0/mtu)"
            \(GuestScript.waitForPing("192.0.2.1"))
            ping -c 20 -i 0.05 -s 8000 192.0.2.1
            """, netOptions: "host_mtu=9000")
        XCTAssertEqual(guest.waitForExit(), 0, guest.console)
        XCTAssertEqual(guest.value("mtu"), 9000, guest.console)
        XCTAssertEqual(guest.pingSummaries.last?.transmitted, 20, guest.console)
        XCTAssertEqual(guest.pingSummaries.last?.received, 20, guest.console)
        XCTAssertTrue(waitUntil { tap.backend.requestTraces.count == 1 })
        XCTAssertEqual(tap.backend.negotiations.first?.mtu, 9000, "QEMU announced host_mtu with NET_SET_MTU")
        XCTAssertEqual(tap.backend.statistics.protocolErrors, 0, tap.backend.statistics.lastError.map { "\($0)" } ?? "")
        XCTAssertEqual(guest.qemuMessages, [])
        print("qemu: host_mtu=9000: guest MTU \(guest.value("mtu") ?? -1), \(guest.pingSummaries.last?.received ?? 0)/20 pings of 8,000 bytes answered by the kernel through the TAP")
    }

    /// TSO/GSO from the guest: with its offloads on, the guest's TCP stack hands virtio_net
    /// segments far larger than the MTU; they cross our tap-mode back-end to the kernel, which
    /// receives 4 MiB intact (the same SHA-256 on both sides).
    func testLargeTCPSegmentsFromTheGuestCrossIntact() throws {
        let largest = Locked(0)
        let large = Locked(0)
        let tap = try tapBackendInNamespace(self) {
            $0.offeredProtocolFeatures.remove(.config)
            $0.frameObserver = { _, length in
                largest.withLock { $0 = max($0, length) }
                if length > 1514 { large.withLock { $0 += 1 } }
            }
        }
        let size = 4 << 20
        let sink = try launchTCPSink(namespace: tap.namespace, bytes: size)
        let guest = try QEMUGuest(self, socket: tap.backend.configuration.socketPath, scenario: """
            \(GuestScript.up)
            dd if=/dev/urandom of=/tmp/data bs=65536 count=\(size / 65536) 2>/dev/null
            echo "GUEST: sha256 $(sha256sum /tmp/data | cut -d' ' -f1)"
            \(GuestScript.waitForPing("192.0.2.1"))
            timeout 120 nc 192.0.2.1 5001 < /tmp/data
            echo "GUEST: nc exit $?"
            """)
        XCTAssertEqual(guest.waitForExit(), 0, guest.console)
        sink.process.waitUntilExit()
        let received = sink.output.withLock { $0 }.trimmingCharacters(in: .whitespacesAndNewlines)
        let guestDigest = try XCTUnwrap(guest.field("sha256"), guest.console)
        XCTAssertEqual(received, "\(size) \(guestDigest)", "the kernel's count and digest against the guest's")
        XCTAssertTrue(waitUntil { tap.backend.requestTraces.count == 1 })
        let features = tap.backend.negotiations.first?.features ?? []
        XCTAssertTrue(features.contains(.netHostTSO4), "QEMU's guest did not negotiate HOST_TSO4: \(features)")
        XCTAssertGreaterThan(large.withLock { $0 }, 0, "no frame larger than the MTU crossed (largest \(largest.withLock { $0 }) bytes)")
        XCTAssertEqual(tap.backend.statistics.protocolErrors, 0, tap.backend.statistics.lastError.map { "\($0)" } ?? "")
        print("qemu: TSO: \(size) bytes intact (SHA-256 equal); \(large.withLock { $0 }) frames above 1,514 bytes crossed, the largest \(largest.withLock { $0 }) bytes")
    }

    // MARK: Helpers

    private func pingThroughSwitch(
        netOptions: String?, count: Int, expect: VirtioFeatures = [], expectAbsent: VirtioFeatures = []
    ) throws {
        let (fabric, guestPort) = try switchWithResponder()
        let guest = try QEMUGuest(self, socket: guestPort, scenario: """
            \(GuestScript.up)
            \(GuestScript.waitForPing(Self.responderIP))
            ping -c \(count) -i 0.02 -s 1000 \(Self.responderIP)
            ping -c \(count) -i 0.02 \(Self.responderIP)
            \(GuestScript.features)
            """, netOptions: netOptions)
        XCTAssertEqual(guest.waitForExit(), 0, guest.console)
        let summaries = guest.pingSummaries
        XCTAssertEqual(summaries.count, 2, guest.console)
        for summary in summaries {
            XCTAssertEqual(summary.transmitted, count, guest.console)
            XCTAssertEqual(summary.received, count, guest.console)
        }
        XCTAssertEqual(fabric.statistics[0].protocolErrors, 0)
        XCTAssertEqual(guest.qemuMessages, [], "QEMU warned")
        let features = try XCTUnwrap(guest.features, guest.console)
        print("qemu: \(netOptions ?? "defaults"): \(summaries.map { "\($0.received)/\($0.transmitted)" }.joined(separator: " and ")) pings answered through the switch; the guest negotiated \(features)")
        XCTAssertTrue(features.isSuperset(of: expect), "the guest's driver negotiated \(features)")
        XCTAssertTrue(features.isDisjoint(with: expectAbsent), "the guest's driver negotiated \(features)")
    }

    /// An in-process switch with ping-responder (another process) on its second port; returns
    /// the switch and the guest's port.
    private func switchWithResponder() throws -> (VhostUserSwitch, String) {
        let paths = try ["guest.sock", "responder.sock"].map { try makeSocketPath(self, name: $0) }
        let fabric = try VhostUserSwitch(configuration: .init(portPaths: paths))
        try fabric.start()
        addTeardownBlock { fabric.stop() }
        _ = try launchResponder(socket: paths[1])
        XCTAssertTrue(waitUntil(seconds: 20) { fabric.statistics[1].isUp }, "ping-responder did not come up")
        return (fabric, paths[0])
    }

    private func launchResponder(socket: String) throws -> Process {
        try launch("ping-responder", ["--socket", socket, "--ip", Self.responderIP, "--mac", Self.responderMAC])
    }

    private func launchSwitchProcess(ports: [String]) throws -> Process {
        try launch("vhost-user-switch", ports.flatMap { ["--port", $0] })
    }

    private func launch(_ product: String, _ arguments: [String]) throws -> Process {
        let process = try launchProduct(product, arguments)
        addTeardownBlock {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
        return process
    }

    /// A TCP sink on 192.0.2.1:5001 in `namespace` (Python): reads `bytes` bytes, then prints
    /// their count and SHA-256 and closes. Gives up after two minutes.
    private func launchTCPSink(namespace: String, bytes: Int) throws -> (process: Process, output: Locked<String>) {
        let program = """
            import hashlib, socket, sys
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("192.0.2.1", 5001))
            server.listen(1)
            server.settimeout(120)
            print("listening", file=sys.stderr, flush=True)
            connection, _ = server.accept()
            connection.settimeout(120)
            digest, count = hashlib.sha256(), 0
            while count < \(bytes):
                data = connection.recv(1 << 20)
                if not data:
                    break
                digest.update(data)
                count += len(data)
            print(count, digest.hexdigest(), flush=True)
            connection.close()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", namespace, "/usr/bin/python3", "-c", program]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        addTeardownBlock { if process.isRunning { process.terminate() } }
        let text = Locked("")
        let listening = Locked(false)
        let outputHandle = output.fileHandleForReading
        let errorHandle = errors.fileHandleForReading
        Thread.detachNewThread {
            let data = outputHandle.readDataToEndOfFile()
            text.withLock { $0 = String(decoding: data, as: UTF8.self) }
        }
        Thread.detachNewThread {
            while true {
                let data = errorHandle.availableData
                if data.isEmpty { break }
                if String(decoding: data, as: UTF8.self).contains("listening") { listening.withLock { $0 = true } }
            }
        }
        XCTAssertTrue(waitUntil(seconds: 20) { listening.withLock { $0 } }, "the TCP sink did not start")
        return (process, text)
    }
}
