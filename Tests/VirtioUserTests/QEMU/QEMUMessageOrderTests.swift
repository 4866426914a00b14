import VirtioCore
import VhostUser
import VhostUserBackend
import VirtioUser
import XCTest

/// What QEMU's vhost-user front-end (hw/virtio/vhost-user.c, 7.2 to current) sends that a
/// strict reading of the protocol refused: each is scripted here message by message, so the
/// back-end's acceptance is checked without booting a guest (QEMUGuestTests do that).
final class QEMUMessageOrderTests: XCTestCase {
    /// QEMU opens with GET_FEATURES and the protocol features, then disables every ring —
    /// before SET_OWNER and SET_FEATURES — and does so again at every virtio reset.
    func testRingsEnabledAndDisabledBeforeSetFeaturesAreAccepted() throws {
        let backend = try startBackend(self)
        let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
        let offered = VirtioFeatures(rawValue: try peer.get(.getFeatures))
        XCTAssertTrue(offered.contains(.vhostUserProtocolFeatures))
        _ = try peer.get(.getProtocolFeatures)
        try peer.send(.setProtocolFeatures([.multiqueue, .replyAck, .mtu, .status]))
        XCTAssertEqual(try peer.get(.getQueueNum), 8)
        for ring in 0..<2 { try peer.send(.setVringEnable(VringState(index: UInt32(ring), num: 0))) }
        try peer.send(.setOwner)
        try peer.send(.setFeatures(offered.intersection([.version1, .vhostUserProtocolFeatures, .netMergeableRxBuffers])))
        try peer.sendMemoryTable()
        try peer.startRing(0)
        try peer.startRing(1)
        // A reply after all of it: the session is still open, with no protocol error.
        XCTAssertEqual(VirtioFeatures(rawValue: try peer.get(.getFeatures)), offered)
        XCTAssertEqual(backend.statistics.protocolErrors, 0, backend.statistics.lastError.map { "\($0)" } ?? "")
    }

    /// A front-end that was never offered PROTOCOL_FEATURES has no business enabling rings.
    func testRingEnableFromAFrontEndNeverOfferedProtocolFeaturesIsRefused() throws {
        let backend = try startBackend(self) { $0.offeredFeatures.remove(.vhostUserProtocolFeatures) }
        let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
        try peer.negotiate(protocolFeatures: false)
        try peer.send(.setVringEnable(VringState(index: 1, num: 1)))
        XCTAssertTrue(peer.waitForHangUp())
        XCTAssertTrue(waitUntil { backend.statistics.protocolErrors == 1 })
        XCTAssertEqual(backend.statistics.lastError, .peerProtocol(.notNegotiated(request: "SET_VRING_ENABLE", feature: "VHOST_USER_F_PROTOCOL_FEATURES")))
    }

    /// A packed ring's SET_VRING_BASE from QEMU carries the used position in the high 16 bits
    /// (0x80008000 for a fresh ring: slot 0, both wrap counters 1); GET_VRING_BASE answers in
    /// the same form, so QEMU resumes where we stopped.
    func testPackedRingBaseCarriesBothHalves() throws {
        let backend = try startBackend(self)
        for base: UInt32 in [0x8000_8000, 0x8003_8003, 0x0005_0005] {
            let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
            let offered = VirtioFeatures(rawValue: try peer.get(.getFeatures))
            try peer.send(.setOwner)
            try peer.send(.setFeatures(offered.intersection([.version1, .vhostUserProtocolFeatures, .ringPacked])))
            _ = try peer.get(.getProtocolFeatures)
            try peer.send(.setProtocolFeatures([]))
            try peer.sendMemoryTable()
            for ring in 0..<2 {
                let index = UInt32(ring)
                try peer.send(.setVringNum(VringState(index: index, num: UInt32(HostileFrontend.queueSize))))
                try peer.send(.setVringBase(VringState(index: index, num: base)))
                try peer.send(.setVringAddr(peer.ringAddress(ring)))
                try peer.send(.setVringKick(VringFile(index: index, hasDescriptor: false)))
            }
            let answer = try peer.get(.getVringBase(VringState(index: 1, num: 0)))
            XCTAssertEqual(UInt32(truncatingIfNeeded: answer), 1, "the ring index")
            XCTAssertEqual(UInt32(truncatingIfNeeded: answer >> 32), base, "base 0x\(String(base, radix: 16))")
            XCTAssertEqual(backend.statistics.protocolErrors, 0, backend.statistics.lastError.map { "\($0)" } ?? "")
        }
    }

    /// A split ring's index is 16 bits whoever sends it: a wider one is still refused.
    func testSplitRingBaseWiderThan16BitsIsStillRefused() throws {
        let backend = try startBackend(self)
        let peer = try HostileFrontend(connectingTo: backend.configuration.socketPath)
        try peer.negotiate()
        try peer.send(.setVringBase(VringState(index: 1, num: 0x8000_8000)))
        XCTAssertTrue(peer.waitForHangUp())
        XCTAssertTrue(waitUntil { backend.statistics.protocolErrors == 1 })
        XCTAssertEqual(backend.statistics.lastError, .peerProtocol(.badRingSetup(ring: 1, problem: "SET_VRING_BASE 2147516416 for a split ring does not fit a 16-bit index")))
    }
}
