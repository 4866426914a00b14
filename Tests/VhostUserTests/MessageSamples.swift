import VhostUser
import VirtioCore

/// One of every message, with the payload size each must have on the wire.
enum MessageSamples {
    static func regions(_ count: Int) -> [MemoryRegionDescriptor] {
        (0..<count).map { (i: Int) -> MemoryRegionDescriptor in
            let n = UInt64(i)
            let guestPhysical: UInt64 = 0x1_0000_0000 + (n << 30)
            let user: UInt64 = 0x7F12_3400_0000 + (n << 32)
            return MemoryRegionDescriptor(guestPhysicalAddress: guestPhysical, size: 0x20_0000 * (n + 1),
                                          userAddress: user, mmapOffset: n * 4096)
        }
    }

    static let address = VringAddress(
        index: 1, flags: 1, descriptorTable: 0x7F00_0000_1000,
        usedRing: 0x7F00_0000_3000, availableRing: 0x7F00_0000_2000, log: 0xDEAD_BEEF_0000)

    static let all: [(message: VhostUserMessage, payloadSize: Int)] = [
        (.getFeatures, 0),
        (.setFeatures([.version1, .netMAC, .vhostUserProtocolFeatures]), 8),
        (.setFeatures(VirtioFeatures(rawValue: UInt64.max)), 8),
        (.setOwner, 0),
        (.resetOwner, 0),
        (.getProtocolFeatures, 0),
        (.setProtocolFeatures([.replyAck, .multiqueue, .status]), 8),
        (.setMemTable(regions(1)), 8 + 32),
        (.setMemTable(regions(3)), 8 + 3 * 32),
        (.setMemTable(regions(8)), 8 + 8 * 32),
        (.setVringNum(VringState(index: 0, num: 256)), 8),
        (.setVringAddr(address), 40),
        (.setVringBase(VringState(index: 1, num: 65500)), 8),
        (.getVringBase(VringState(index: 3, num: 0)), 8),
        (.setVringKick(VringFile(index: 0, hasDescriptor: true)), 8),
        (.setVringKick(VringFile(index: 255, hasDescriptor: false)), 8),
        (.setVringCall(VringFile(index: 1, hasDescriptor: true)), 8),
        (.setVringCall(VringFile(index: 7, hasDescriptor: false)), 8),
        (.setVringErr(VringFile(index: 2, hasDescriptor: true)), 8),
        (.setVringErr(VringFile(index: 2, hasDescriptor: false)), 8),
        (.getQueueNum, 0),
        (.setVringEnable(VringState(index: 1, num: 1)), 8),
        (.setVringEnable(VringState(index: 0, num: 0)), 8),
        (.setStatus(0), 8),
        (.setStatus(0xFF), 8),
        (.getStatus, 0),
    ]
}
