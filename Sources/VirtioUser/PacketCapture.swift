#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VirtioCore

/// A pcap file that a queue pair's frames are copied into as they pass: the classic libpcap
/// format (Ethernet link type, microsecond timestamps) that tshark, tcpdump and Wireshark read.
///
/// Attach one to a queue pair with ``VirtioUserDevice/startCapture(_:queue:)``. Frames are
/// copied on the pair's own thread into a buffer allocated once, which goes to the file when
/// full and at ``close()``; a queue pair without a capture pays one pointer load per burst.
/// A frame of several buffers is written as one record.
public final class PacketCapture: @unchecked Sendable {
    /// Which frames to copy.
    public struct Directions: OptionSet, Sendable {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        /// Frames the queue pair received.
        public static let receive = Directions(rawValue: 1)
        /// Frames the queue pair took to transmit.
        public static let transmit = Directions(rawValue: 2)
    }

    /// The file's path.
    public let path: String
    /// Which frames are copied.
    public let directions: Directions
    /// Records are cut to this many bytes (their original length is kept).
    public let snapLength: Int
    private let file: OwnedDescriptor
    private let buffer: UnsafeMutableRawPointer
    private let bufferSize = 1 << 20
    // Touched only by the one thread driving the pair (and by close() after detaching).
    private var buffered = 0
    private var failure: VirtioError?
    private let written = Atomic<UInt64>(0)

    /// Creates (or truncates) the file at `path` and writes the pcap header.
    public init(path: String, directions: Directions = [.receive, .transmit], snapLength: Int = 65535) throws(VirtioError) {
        guard (64...262_144).contains(snapLength) else {
            throw .invalid("snapLength", snapLength, "64…262144 bytes")
        }
        self.path = path
        self.directions = directions
        self.snapLength = snapLength
        let fd = try SystemCall.run("open(\(path))", hint: "Check that the capture's directory exists and is writable.") {
            open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
        file = OwnedDescriptor(taking: fd)
        buffer = .allocate(byteCount: bufferSize, alignment: 16)
        // Global header: magic, version 2.4, GMT offset 0, accuracy 0, snap length,
        // LINKTYPE_ETHERNET (1).
        var header = (UInt32(0xA1B2_C3D4), UInt16(2), UInt16(4), Int32(0), UInt32(0), UInt32(snapLength), UInt32(1))
        withUnsafeBytes(of: &header) { buffer.copyMemory(from: $0.baseAddress!, byteCount: 24) }
        buffered = 24
        try flush()
    }

    deinit {
        try? flush()
        buffer.deallocate()
    }

    /// Frames written so far (readable from any thread).
    public var framesWritten: UInt64 { written.load(ordering: .relaxed) }

    /// Writes what is buffered to the file. Call only while no queue pair uses the capture
    /// (after ``VirtioUserDevice/stopCapture(queue:)``).
    public func close() throws(VirtioError) {
        try flush()
        if let failure { throw failure }
    }

    /// Appends the frames held in `burst[first..<first + count]` (a frame's continuation
    /// buffers follow its first), stamped with the time now.
    @usableFromInline
    func record(_ burst: PacketBurst, from first: Int, count: Int) {
        guard count > 0, failure == nil else { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var i = first
        let end = first + count
        var frames: UInt64 = 0
        while i < end {
            let segments = max(1, Int(burst.storage[i].segments))
            let parts = min(segments, end - i)
            var length = 0
            for k in 0..<parts { length += max(0, burst.storage[i + k].length) }
            let kept = min(length, snapLength)
            if buffered + 16 + kept > bufferSize {
                do throws(VirtioError) { try flush() } catch { failure = error; return }
            }
            var record = (UInt32(truncatingIfNeeded: now.tv_sec), UInt32(truncatingIfNeeded: now.tv_nsec / 1000),
                          UInt32(kept), UInt32(length))
            withUnsafeBytes(of: &record) { (buffer + buffered).copyMemory(from: $0.baseAddress!, byteCount: 16) }
            buffered += 16
            var remaining = kept
            for k in 0..<parts where remaining > 0 {
                let part = burst.storage[i + k]
                let n = min(max(0, part.length), remaining)
                (buffer + buffered).copyMemory(from: part.data, byteCount: n)
                buffered += n
                remaining -= n
            }
            frames += 1
            i += parts
        }
        written.add(frames, ordering: .relaxed)
    }

    private func flush() throws(VirtioError) {
        var done = 0
        while done < buffered {
            let n = try SystemCall.run("write", hint: "writing the capture \(path)") {
                write(file.raw, buffer + done, buffered - done)
            }
            done += n
        }
        buffered = 0
    }
}

extension VirtioUserDevice {
    /// Starts copying the frames queue pair `queue` receives and transmits (as `capture`'s
    /// directions say) into `capture`, until ``stopCapture(queue:)``. Works whether or not the
    /// link is up. Fails when the pair does not exist or already has a capture.
    public func startCapture(_ capture: PacketCapture, queue: Int = 0) throws(VirtioError) {
        guard let pair = pair(queue) else {
            throw .invalid("queue", queue, "this device has queue pairs 0…\(queuePairCount - 1)")
        }
        try pair.attach(capture)
    }

    /// Stops the capture on queue pair `queue` (waiting for a burst in progress) and returns
    /// it, still open: ``PacketCapture/close()`` writes out what it buffered. Nil when there
    /// was none.
    @discardableResult
    public func stopCapture(queue: Int = 0) -> PacketCapture? {
        pair(queue)?.detachCapture()
    }
}
