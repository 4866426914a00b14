import CAllocationCounter
import Foundation
import VirtioUser
import VirtioUserIP
import XCTest

/// VirtioUserIP against the kernel: our lwIP interface (192.0.2.2/24) on a device behind
/// `vhost-user-backend --mode tap`, and the kernel's sockets (Tests/IPClients/ip_client.py,
/// curl, ping) in the TAP's network namespace (192.0.2.1/24) as the only clients.
final class IPStackTapTests: XCTestCase {
    private static let ours = "192.0.2.2"
    private let kernelAddress = IPAddress(192, 0, 2, 1)

    func testHTTPExampleAnswersAThousandCurlRequests() async throws {
        let tap = try tapBackendInNamespace(self)
        let kernel = KernelSide(namespace: tap.namespace)
        try launchExample("http-hello", [tap.backend.configuration.socketPath, "\(Self.ours)/24", "8080"])
        let url = "http://\(Self.ours):8080/"
        let answered = try await retry { try await kernel.run(["curl", "-s", "-m", "2", url]) == "hello" }
        XCTAssertTrue(answered, "http-hello never answered")
        let ping = try await kernel.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", Self.ours])
        XCTAssertTrue(ping.contains("3 received"), ping)
        // 1,000 requests over up to 8 connections at once, keep-alive.
        let urls = (1...1000).map { "\(url)\($0)" }
        let replies = try await kernel.run(["curl", "-s", "-m", "120", "--parallel", "--parallel-max", "8"] + urls)
        XCTAssertEqual(replies.split(separator: "\n").filter { $0 == "hello" }.count, 1000)
    }

    func testUDPExampleEchoesTenThousandDatagramsIntact() async throws {
        let tap = try tapBackendInNamespace(self)
        let kernel = KernelSide(namespace: tap.namespace)
        try launchExample("udp-echo", [tap.backend.configuration.socketPath, "\(Self.ours)/24", "7"])
        let echoing = try await retry { try await kernel.client(["udp-echo", Self.ours, "7", "10"]) == "intact 10 of 10" }
        XCTAssertTrue(echoing, "udp-echo never echoed")
        // Some datagrams are 3,000 bytes: fragmented and reassembled by each stack.
        let result = try await kernel.client(["udp-echo", Self.ours, "7", "10000"])
        XCTAssertEqual(result, "intact 10000 of 10000")
    }

    func testGibibyteFromTheKernelArrivesIntact() async throws {
        try XCTSkipUnless(allocation_counter_available() == 1, "the gibibyte transfers run in the plain (unsanitized) pass")
        let (kernel, interface) = try ourInterface()
        let listener = try interface.listen(port: 5001)
        let total = 1 << 30
        async let sent = kernel.client(["tcp-send", Self.ours, "5001", "\(total)"])
        var iterator = listener.makeAsyncIterator()
        let connection = try await XCTUnwrapAsync(try await iterator.next())
        let digest = try SHA256Pipe()
        var received = 0
        for try await chunk in connection.inbound {
            received += chunk.count
            try digest.update(chunk)
        }
        connection.close()
        XCTAssertEqual(received, total)
        let expected = try await sent
        XCTAssertEqual(try digest.finish(), expected)
        listener.close()
    }

    func testGibibyteToTheKernelArrivesIntact() async throws {
        try XCTSkipUnless(allocation_counter_available() == 1, "the gibibyte transfers run in the plain (unsanitized) pass")
        let (kernel, interface) = try ourInterface()
        let listener = try interface.listen(port: 5002)
        let total = 1 << 30
        async let received = kernel.client(["tcp-receive", Self.ours, "5002"])
        var iterator = listener.makeAsyncIterator()
        let connection = try await XCTUnwrapAsync(try await iterator.next())
        let digest = try SHA256Pipe()
        var generator = SplitMix64(seed: 42)
        var block = [UInt8](repeating: 0, count: 1 << 20)
        for _ in 0..<(total / block.count) {
            generator.fill(&block)
            try digest.update(block)
            try await connection.write(block)
        }
        connection.close()
        let result = try await received
        XCTAssertEqual(result, "\(total) \(try digest.finish())")
        listener.close()
    }

    func testAClientResetMidTransferFailsOnlyItsConnection() async throws {
        let (kernel, interface) = try ourInterface()
        let listener = try interface.listen(port: 5003)
        var iterator = listener.makeAsyncIterator()
        async let reset = kernel.client(["tcp-reset", Self.ours, "5003", "\(4 << 20)"])
        let victim = try await XCTUnwrapAsync(try await iterator.next())
        var failure: IPError?
        do {
            // Read slowly enough that the reset comes while bytes are still in flight.
            for try await _ in victim.inbound { try await Task.sleep(for: .milliseconds(1)) }
        } catch let error as IPError {
            failure = error
        }
        XCTAssertEqual(failure, .connectionReset)
        do {
            try await victim.write("too late")
            XCTFail("a write on a reset connection succeeded")
        } catch {
            XCTAssertEqual(error, .connectionReset)
        }
        victim.close()
        _ = try await reset
        // The listener and the stack go on: the next client is served in full.
        async let sent = kernel.client(["tcp-send", Self.ours, "5003", "100000"])
        let next = try await XCTUnwrapAsync(try await iterator.next())
        let digest = try SHA256Pipe()
        for try await chunk in next.inbound { try digest.update(chunk) }
        next.close()
        let expected = try await sent
        XCTAssertEqual(try digest.finish(), expected)
        listener.close()
    }

    func testConnectsToTheKernelAndIsRefusedWhereNothingListens() async throws {
        let (kernel, interface) = try ourInterface()
        let closedPort = IPEndpoint(address: kernelAddress, port: 5999)
        do {
            _ = try await interface.connect(to: closedPort)
            XCTFail("connected to a port nothing listens on")
        } catch {
            XCTAssertEqual(error, .connectionRefused(closedPort))
        }
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        server.arguments = ["netns", "exec", kernel.namespace, "python3", kernel.script, "tcp-serve", "6000"]
        server.standardOutput = FileHandle.nullDevice
        try server.run()
        addTeardownBlock { if server.isRunning { server.terminate() }; server.waitUntilExit() }
        // Refused until the server listens.
        var connection: TCPConnection?
        for _ in 0..<100 where connection == nil {
            connection = try? await interface.connect(to: IPEndpoint(address: kernelAddress, port: 6000))
            if connection == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        let established = try XCTUnwrap(connection)
        XCTAssertEqual(established.local.address, IPAddress(Self.ours))
        try await established.write("ping")
        try established.shutdownOutput()
        var reply: [UInt8] = []
        for try await chunk in established.inbound { reply += chunk }
        established.close()
        XCTAssertEqual(String(decoding: reply, as: UTF8.self), "pong:ping")
    }

    /// The interface's IPv6 link-local address answers the kernel's ping, and the dual-stack
    /// listener takes a connection over it.
    func testTheKernelReachesUsOverIPv6LinkLocal() async throws {
        let (kernel, interface, tap) = try ourInterface(ipv6: true)
        var linkLocal: IPAddress?
        for _ in 0..<100 where linkLocal == nil {
            linkLocal = interface.ipv6LinkLocalAddress
            if linkLocal == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        let address = try XCTUnwrap(linkLocal)
        XCTAssertTrue(address.isLinkLocal, "\(address)")
        let scoped = "\(address)%\(tap)"
        // Duplicate address detection takes about a second; until then the address is tentative.
        let answered = try await retry { try await kernel.run(["ping", "-6", "-c", "1", "-W", "1", scoped]).contains("1 received") }
        XCTAssertTrue(answered, "no answer to ping -6 \(scoped)")
        let listener = try interface.listen(port: 5006)
        async let sent = kernel.client(["tcp-send", scoped, "5006", "100000"])
        var iterator = listener.makeAsyncIterator()
        let connection = try await XCTUnwrapAsync(try await iterator.next())
        XCTAssertFalse(connection.remote.address.isIPv4)
        let digest = try SHA256Pipe()
        for try await chunk in connection.inbound { try digest.update(chunk) }
        connection.close()
        let expected = try await sent
        XCTAssertEqual(try digest.finish(), expected)
        listener.close()
    }

    /// Two tenants in one process, on two devices with the same address (192.0.2.2, each in its
    /// own network) and the same port: each kernel reaches its own tenant's listener.
    func testTwoInterfacesWithOneAddressAndPortEachServeTheirOwnNetwork() async throws {
        let (kernelA, a, _) = try ourInterface(ipv6: false)
        let (kernelB, b, _) = try ourInterface(ipv6: false)
        let listeners = [try a.listen(port: 5007), try b.listen(port: 5007)]
        async let readA = kernelA.client(["tcp-read", Self.ours, "5007"])
        async let readB = kernelB.client(["tcp-read", Self.ours, "5007"])
        for (listener, name) in zip(listeners, ["tenant A", "tenant B"]) {
            var iterator = listener.makeAsyncIterator()
            let connection = try await XCTUnwrapAsync(try await iterator.next())
            try await connection.write(name)
            connection.close()
            listener.close()
        }
        let (answerA, answerB) = try await (readA, readB)
        XCTAssertEqual(answerA, "tenant A")
        XCTAssertEqual(answerB, "tenant B")
    }

    /// Closing one tenant's interface ends only what is open on it: its connection fails with
    /// `interfaceClosed`, its listener ends, and another tenant's connection on the same
    /// address goes on. (lwIP's netif_remove aborts every connection with the interface's
    /// address, whatever its interface.)
    func testClosingAnInterfaceEndsOnlyWhatIsOpenOnIt() async throws {
        let (kernelA, a, _) = try ourInterface(ipv6: false)
        let (kernelB, b, _) = try ourInterface(ipv6: false)
        let listenerA = try a.listen(port: 5011)
        let listenerB = try b.listen(port: 5011)
        let socketA = try a.bindUDP(port: 5011)
        // A's client waits in vain once A is gone: `timeout` ends it.
        let clientA = kernelA.clientTask(["tcp-stall", Self.ours, "5011", "1"], endingAfter: 5)
        let clientB = kernelB.clientTask(["tcp-ask", Self.ours, "5011", "100000"])
        let connectionA = try await acceptOne(listenerA, whileRunning: clientA)
        let connectionB = try await acceptOne(listenerB, whileRunning: clientB)
        var acceptorA = listenerA.makeAsyncIterator()
        let readerA = Task { () -> IPError? in
            do {
                for try await _ in connectionA.inbound {}
                return nil
            } catch {
                return error as? IPError
            }
        }
        a.close()
        let failureA = await readerA.value
        XCTAssertEqual(failureA, .interfaceClosed)
        // B, on the same address, is untouched.
        var count = 0
        for try await chunk in connectionB.inbound { count += chunk.count }
        try await connectionB.write("got \(count)")
        connectionB.close()
        let answerB = try await clientB.value
        XCTAssertEqual(answerB, "got 100000")
        listenerB.close()
        // A's listener and socket ended; nothing opens on A any more.
        let nextA = try await acceptorA.next()
        XCTAssertNil(nextA, "A's listener goes on after A closed")
        var datagramsA = socketA.datagrams.makeAsyncIterator()
        let datagramA = try await datagramsA.next()
        XCTAssertNil(datagramA, "A's socket goes on after A closed")
        XCTAssertThrowsError(try a.listen(port: 5012)) { XCTAssertEqual($0 as? IPError, .interfaceClosed) }
    }

    /// With receive checksum offload negotiated, the kernel leaves TCP and UDP checksums open
    /// (CHECKSUM_PARTIAL through the TAP); each is completed before lwIP checks it.
    func testChecksumsTheKernelLeavesOpenAreCompletedBeforeTheStackChecksThem() async throws {
        let (kernel, interface, _) = try ourInterface(ipv6: false, offloads: [.receiveChecksum])
        let listener = try interface.listen(port: 5009)
        let sent = kernel.clientTask(["tcp-send", Self.ours, "5009", "\(16 << 20)"])
        let connection = try await acceptOne(listener, whileRunning: sent)
        let digest = try SHA256Pipe()
        for try await chunk in connection.inbound { try digest.update(chunk) }
        connection.close()
        let expected = try await sent.value
        XCTAssertEqual(try digest.finish(), expected)
        listener.close()
        // UDP: an echo of our own, to ip_client.py's 1,000 datagrams (some fragmented).
        let socket = try interface.bindUDP(port: 7)
        let echo = Task {
            for try await datagram in socket.datagrams { try socket.send(datagram.payload, to: datagram.remote) }
        }
        let echoed = try await kernel.client(["udp-echo", Self.ours, "7", "1000"])
        XCTAssertEqual(echoed, "intact 1000 of 1000")
        echo.cancel()
        socket.close()
        let completed = LwIPCore.withCore { interface.link.checksumsCompleted }
        XCTAssertGreaterThan(completed, 1000, "frames arrived with their checksums complete: the offload was not used")
    }

    /// lwIP takes frames no longer than the MTU: a device that negotiated receive segmentation
    /// is refused, with what to do instead.
    func testADeviceThatNegotiatedReceiveSegmentationIsRefused() throws {
        let backend = try startBackend(self)
        var configuration = VirtioUserDevice.Configuration(socketPath: backend.configuration.socketPath)
        configuration.offloads = [.receiveChecksum, .receiveSegmentation4]
        let device = try VirtioUserDevice(configuration: configuration)
        try device.start()
        addTeardownBlock { device.stop() }
        XCTAssertTrue(device.negotiatedFeatures.contains(.netGuestTSO4))
        XCTAssertThrowsError(try IPInterface(device: device, configuration: .init(address: IPAddress(192, 0, 2, 2), prefixLength: 24))) { error in
            guard case .invalidArgument(let text) = error as? IPError else { return XCTFail("\(error)") }
            XCTAssertTrue(text.contains("receiveSegmentation4"), text)
        }
    }

    func testAddressesParseAndPrint() {
        XCTAssertEqual(IPAddress("192.0.2.2"), IPAddress(192, 0, 2, 2))
        XCTAssertEqual(IPAddress("192.0.2.2")?.description, "192.0.2.2")
        XCTAssertEqual(IPAddress("fe80::1:2")?.description, "fe80::1:2")
        XCTAssertEqual(IPAddress("fe80::1")?.isLinkLocal, true)
        XCTAssertEqual(IPAddress("2001:db8::1")?.isLinkLocal, false)
        XCTAssertNil(IPAddress("192.0.2"))
        XCTAssertNil(IPAddress("host.example"))
        XCTAssertEqual(IPInterface.Configuration(cidr: "10.1.2.3/8")?.prefixLength, 8)
        XCTAssertNil(IPInterface.Configuration(cidr: "10.1.2.3/33"))
        XCTAssertNil(IPInterface.Configuration(cidr: "fe80::1/64"))
        XCTAssertNil(IPInterface.Configuration(cidr: "10.1.2.3"))
        XCTAssertThrowsError(try IPInterface(socketPath: "/nonexistent/vhost.sock", cidr: "10.1.2.3")) { error in
            guard case .invalidArgument(let text) = error as? IPError else { return XCTFail("\(error)") }
            XCTAssertTrue(text.contains("10.1.2.3"), text)
        }
    }
}
