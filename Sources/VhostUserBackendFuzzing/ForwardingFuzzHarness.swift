#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VhostUser
import VhostUserBackend
import VirtioCore

/// Drives the back-end's data path — available-ring reads, descriptor-chain walks, address
/// translation, frame copies — over front-end memory filled with arbitrary bytes, for the
/// libFuzzer target in Fuzz/ (`Scripts/fuzz.sh`) and tests: a product of its own, so the
/// back-end's API has no fuzzing hooks. No socket: the data path runs over the memory map and
/// rings alone, as the protocol handler would have set them up.
///
/// The memory is a real memfd region mapped through `GuestMemoryMap` exactly as for a
/// front-end. Both rings (size 8) are packed into its first 512 bytes — receive ring at 0,
/// transmit ring at 256: descriptors, then available ring at +128, used ring at +160 — and
/// "guest physical" addresses start at 0, so short inputs with small numbers reach the chain
/// walk and the copies. Byte 512 chooses the negotiated features: bit 0 indirect
/// descriptors, bit 1 mergeable receive buffers, bit 2 event indices, bit 3 checksum offload
/// (CSUM), bit 4 receive checksum and TCP segmentation (GUEST_CSUM, HOST_TSO4), bit 5 packed
/// rings (the same places hold the descriptor ring, then the driver and device event areas).
public final class ForwardingFuzzHarness {
    /// Bytes of front-end memory; inputs longer than this are cut.
    public static let memorySize = 64 << 10
    static let queueSize = 8
    /// The front-end's virtual address of the region (ring addresses use it).
    static let userAddress: UInt64 = 0x7000_0000

    private let memory = GuestMemoryMap()
    private let vrings = [BackendVring(index: 0), BackendVring(index: 1)]
    private let dataPath: BackendDataPath
    private let mapping: UnsafeMutableRawPointer
    private let counters = BackendCounters(queuePairs: 1)

    public init() throws(VirtioError) {
        dataPath = BackendDataPath(memory: memory, vrings: vrings)
        let fd = try SystemCall.run("memfd_create", hint: "") { cvs_memfd_create("fuzz-frontend", UInt32(CVS_MEMFD_DEFAULT)) }
        let file = OwnedDescriptor(taking: fd)
        _ = try SystemCall.run("ftruncate", hint: "") { ftruncate(fd, off_t(Self.memorySize)) }
        guard let mapping = cvs_mmap_shared(fd, Self.memorySize, 0) else {
            throw VirtioError.system("mmap of the fuzz memory", errno: errno)
        }
        self.mapping = mapping
        let region = MemoryRegionDescriptor(
            guestPhysicalAddress: 0, size: UInt64(Self.memorySize),
            userAddress: Self.userAddress, mmapOffset: 0)
        try memory.replace(with: [region], descriptors: [file])
    }

    /// Where ring `index` lies: descriptors, then the available ring at +128, used at +160.
    private static func address(of index: Int) -> VringAddress {
        let base = userAddress + UInt64(index * 256)
        return VringAddress(index: UInt32(index), descriptorTable: base, usedRing: base + 160, availableRing: base + 128)
    }

    deinit { _ = cvs_munmap(mapping, Self.memorySize) }

    /// Copies `input` over the front-end memory (rings first), restarts both rings at index 0
    /// and runs a few bursts of loopback forwarding. Returns the frames handled; a protocol
    /// violation is the expected outcome for most inputs and ends the run quietly.
    @discardableResult
    public func run(_ input: UnsafeRawBufferPointer) -> Int {
        let length = min(input.count, Self.memorySize)
        mapping.initializeMemory(as: UInt8.self, repeating: 0, count: Self.memorySize)
        if length > 0, let source = input.baseAddress { mapping.copyMemory(from: source, byteCount: length) }
        let choice = length > 512 ? mapping.load(fromByteOffset: 512, as: UInt8.self) : 0
        var features: VirtioFeatures = .version1
        if choice & 1 != 0 { features.insert(.ringIndirectDescriptors) }
        if choice & 2 != 0 { features.insert(.netMergeableRxBuffers) }
        if choice & 4 != 0 { features.insert(.ringEventIndex) }
        if choice & 8 != 0 { features.insert(.netCsum) }
        if choice & 16 != 0 { features.formUnion([.netGuestCsum, .netHostTSO4]) }
        if choice & 32 != 0 { features.insert(.ringPacked) }
        dataPath.apply(features)
        var handled = 0
        do throws(VirtioError) {
            for (index, vring) in vrings.enumerated() {
                vring.stop()
                // Both formats start at slot 0; a packed ring's wrap counters start at 1.
                vring.prepare(
                    size: Self.queueSize, base: features.contains(.ringPacked) ? 0x8000 : 0,
                    address: Self.address(of: index), enabled: true)
                try vring.start(memory: memory)
            }
            for _ in 0..<4 {
                handled += try dataPath.forwardLoopback(burst: 32, counters: counters)
            }
        } catch {
            return handled
        }
        return handled
    }
}
