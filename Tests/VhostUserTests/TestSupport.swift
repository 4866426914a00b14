#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import Synchronization
import VhostUser
import VirtioCore
import XCTest

/// Asserts that `body` throws a `VirtioError` of the case `kind`; returns the error for further checks.
@discardableResult
func assertThrowsVirtioError<T>(
    _ kind: VirtioError.Domain,
    _ context: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line,
    _ body: () throws(VirtioError) -> T
) -> VirtioError? {
    do throws(VirtioError) {
        let value = try body()
        XCTFail("\(context()): expected a .\(kind) error, got the value \(value)", file: file, line: line)
        return nil
    } catch {
        XCTAssertEqual(error.domain, kind, "\(context()): unexpected error: \(error)", file: file, line: line)
        XCTAssertFalse(error.description.isEmpty, "error without a description", file: file, line: line)
        return error
    }
}

/// Asserts that a result is a failure of `kind`.
func assertFailure<T>(_ result: Result<T, VirtioError>?, _ kind: VirtioError.Domain, file: StaticString = #filePath, line: UInt = #line) {
    switch result {
    case .none: XCTFail("no result", file: file, line: line)
    case .success(let value)?: XCTFail("expected a .\(kind) error, got \(value)", file: file, line: line)
    case .failure(let error)?: XCTAssertEqual(error.domain, kind, "unexpected error: \(error)", file: file, line: line)
    }
}

/// A value handed from another thread to the test thread.
final class LockedBox<Value: Sendable>: Sendable {
    private let storage: Mutex<Value?>
    init() { storage = Mutex(nil) }
    func set(_ value: Value) { storage.withLock { $0 = value } }
    var value: Value? { storage.withLock { $0 } }
}

/// Little-endian bytes of an integer.
func littleEndianBytes<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

/// The 12 header bytes for arbitrary (possibly invalid) field values.
func rawHeader(request: UInt32, flags: UInt32, size: UInt32) -> [UInt8] {
    littleEndianBytes(request) + littleEndianBytes(flags) + littleEndianBytes(size)
}

/// Writes all of `bytes` on `socket` with plain write(2), bypassing VhostUserChannel.
func rawWrite(_ bytes: [UInt8], to socket: OwnedDescriptor, file: StaticString = #filePath, line: UInt = #line) {
    let n = bytes.withUnsafeBytes { Glibc.write(socket.raw, $0.baseAddress, $0.count) }
    XCTAssertEqual(n, bytes.count, "write(2) on the raw socket", file: file, line: line)
}

/// Sends `bytes` with `fds` attached in one sendmsg(2), building the SCM_RIGHTS control message
/// by hand so that more descriptors than the shim allows can be attached.
func rawSendWithDescriptors(_ bytes: [UInt8], fds: [Int32], to socket: OwnedDescriptor) -> Int {
    let header = MemoryLayout<cmsghdr>.size
    let dataLength = fds.count * MemoryLayout<Int32>.size
    let space = header + SharedMemoryRegion.roundUp(dataLength, to: MemoryLayout<Int>.size)
    let control = UnsafeMutableRawPointer.allocate(byteCount: space, alignment: MemoryLayout<cmsghdr>.alignment)
    defer { control.deallocate() }
    control.initializeMemory(as: UInt8.self, repeating: 0, count: space)
    let cmsg = control.assumingMemoryBound(to: cmsghdr.self)
    cmsg.pointee.cmsg_len = header + dataLength
    cmsg.pointee.cmsg_level = SOL_SOCKET
    cmsg.pointee.cmsg_type = Int32(SCM_RIGHTS)
    for (i, fd) in fds.enumerated() {
        control.storeBytes(of: fd, toByteOffset: header + i * MemoryLayout<Int32>.size, as: Int32.self)
    }
    var bytes = bytes
    return bytes.withUnsafeMutableBytes { raw in
        var iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            var message = msghdr()
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            message.msg_control = control
            message.msg_controllen = space
            return sendmsg(socket.raw, &message, Int32(MSG_NOSIGNAL))
        }
    }
}

/// Waits until everything written to the stream has been read on `socket`'s side (the receive
/// queue is empty), without consuming anything. Fails after `timeoutMilliseconds`.
func waitUntilConsumed(_ socket: OwnedDescriptor, timeoutMilliseconds: UInt64 = 20_000,
                       file: StaticString = #filePath, line: UInt = #line) -> Bool {
    let deadline = MonotonicClock.nanoseconds() + timeoutMilliseconds * 1_000_000
    var byte: UInt8 = 0
    while true {
        let n = recv(socket.raw, &byte, 1, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
        if n < 0 && errno == EAGAIN { return true }
        if MonotonicClock.nanoseconds() > deadline {
            XCTFail("the receiver did not read the bytes within \(timeoutMilliseconds) ms", file: file, line: line)
            return false
        }
        sched_yield()
    }
}

/// A connected socket pair where the second end can be closed on demand.
final class SocketPair {
    let ours: OwnedDescriptor
    private(set) var theirs: OwnedDescriptor?

    init() throws {
        let pair = try UnixSocket.pair()
        ours = pair.0
        theirs = pair.1
    }

    /// The peer end (valid until ``closePeer()``).
    var peer: OwnedDescriptor { theirs! }

    /// Closes the peer end for real (the last reference goes away).
    func closePeer() { theirs = nil }
}
