#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import SystemPackage
import VirtioCore

/// One message as it crossed the socket: header, payload and any fds that came with it.
@usableFromInline package struct VhostUserFrame: Sendable {
    @usableFromInline package var header: VhostUserHeader
    @usableFromInline package var payload: [UInt8]
    /// Received fds, owned by the frame (closed when it is dropped unless taken).
    @usableFromInline package var descriptors: [OwnedDescriptor]

    @usableFromInline package init(header: VhostUserHeader, payload: [UInt8], descriptors: [OwnedDescriptor] = []) {
        self.header = header
        self.payload = payload
        self.descriptors = descriptors
    }
}

/// A framed vhost-user connection over an AF_UNIX stream socket, with fd passing.
///
/// Sends use MSG_NOSIGNAL (a dead peer is an error, not SIGPIPE) and MSG_DONTWAIT, waiting at
/// most ``sendTimeoutMilliseconds`` for a peer that is slow to read; receives read exactly one
/// message, waiting at most a deadline, and refuse oversized payloads and truncated or excess
/// fds. A peer that stops reading or sends half a message costs a bounded time, never a hang.
/// Not thread-safe: one session drives a channel.
@usableFromInline package final class VhostUserChannel {
    /// The connected socket.
    @usableFromInline package let socket: OwnedDescriptor

    /// How long one send may wait for the peer to make room (read what we sent before)
    /// before it fails with ``VirtioError/Kind/timeout``.
    @usableFromInline package var sendTimeoutMilliseconds: Int

    /// A monotonic instant (``MonotonicClock/nanoseconds()``) past which no send or receive
    /// waits, whatever its own timeout: a caller with a budget for several messages (a
    /// teardown that must end in bounded time) sets it.
    @usableFromInline package var deadline: UInt64 = .max

    /// Wraps a connected socket.
    @usableFromInline package init(socket: OwnedDescriptor, sendTimeoutMilliseconds: Int = 5000) {
        self.socket = socket
        self.sendTimeoutMilliseconds = sendTimeoutMilliseconds
    }

    /// Sends one message.
    @usableFromInline package func send(request: VhostUserRequest, flags: UInt32, payload: [UInt8], descriptors: [Int32] = []) throws(VirtioError) {
        guard descriptors.count <= Int(CVS_MAX_RECV_FDS) else {
            throw .invalid("file descriptors of \(request)", descriptors.count, "at most \(CVS_MAX_RECV_FDS) fit one message")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(VhostUserHeader.byteCount + payload.count)
        VhostUserHeader(request: request, flags: flags | VhostUserHeader.version, size: UInt32(payload.count)).encode(into: &bytes)
        bytes.append(contentsOf: payload)
        let deadline = min(self.deadline, MonotonicClock.deadline(milliseconds: sendTimeoutMilliseconds, after: MonotonicClock.nanoseconds()))
        var sent = 0
        while sent < bytes.count {
            // The fds ride on the first chunk only.
            let fds = sent == 0 ? descriptors : []
            let (n, code) = bytes.withUnsafeBytes { raw in
                fds.withUnsafeBufferPointer { fdBuffer in
                    SystemCall.attempt {
                        cvs_send_with_fds(socket.raw, raw.baseAddress! + sent, raw.count - sent, fdBuffer.baseAddress, Int32(fdBuffer.count))
                    }
                }
            }
            if n < 0 && (code == EAGAIN || code == EWOULDBLOCK) {
                let remaining = MonotonicClock.pollMilliseconds(until: deadline)
                guard remaining != 0, try Poll.waitWritable(socket.raw, milliseconds: remaining) else {
                    throw .connection(.timedOut(waitingFor: "the peer to read \(request), at most \(sendTimeoutMilliseconds) ms"))
                }
                continue
            }
            if n < 0 {
                if code == EPIPE || code == ECONNRESET {
                    throw .connection(.closedByPeer(during: "while we sent \(request)", errno: Errno(rawValue: code)))
                }
                throw VirtioError.system("sending \(request)", errno: code)
            }
            sent += n
        }
    }

    /// Sends a typed request.
    @usableFromInline package func send(_ message: VhostUserMessage, needReply: Bool = false, descriptors: [Int32] = []) throws(VirtioError) {
        try send(request: message.request, flags: needReply ? VhostUserHeader.needReplyFlag : 0,
                 payload: message.encodePayload(), descriptors: descriptors)
    }

    /// Sends a reply to `request` with `payload`.
    @usableFromInline package func reply(to request: VhostUserRequest, payload: [UInt8]) throws(VirtioError) {
        try send(request: request, flags: VhostUserHeader.replyFlag, payload: payload)
    }

    /// Receives one whole message, waiting at most `timeoutMilliseconds` in total
    /// (negative: forever).
    @usableFromInline package func receive(timeoutMilliseconds: Int) throws(VirtioError) -> VhostUserFrame {
        let own = timeoutMilliseconds < 0 ? UInt64.max : MonotonicClock.deadline(milliseconds: timeoutMilliseconds, after: MonotonicClock.nanoseconds())
        let deadline = min(self.deadline, own)
        var descriptors: [OwnedDescriptor] = []
        let headerBytes = try read(count: VhostUserHeader.byteCount, deadline: deadline, descriptors: &descriptors, what: "a message header")
        let header = try VhostUserHeader.decode(headerBytes[...])
        let payload = try read(count: Int(header.size), deadline: deadline, descriptors: &descriptors, what: "the \(header.request) payload")
        return VhostUserFrame(header: header, payload: payload, descriptors: descriptors)
    }

    private func read(count: Int, deadline: UInt64, descriptors: inout [OwnedDescriptor], what: String) throws(VirtioError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            // Data already waiting is read even when the deadline has passed (a zero timeout
            // means "only what is there now"); only an empty socket past the deadline times out.
            let wait = MonotonicClock.pollMilliseconds(until: deadline)
            if try Poll.waitReadable(socket.raw, milliseconds: wait) == .timedOut {
                if wait == 0 || MonotonicClock.nanoseconds() >= deadline {
                    throw .connection(.timedOut(waitingFor: what))
                }
                continue
            }
            var fds = [Int32](repeating: -1, count: Int(CVS_MAX_RECV_FDS))
            var fdCount: Int32 = 0
            var flags: Int32 = 0
            let (n, code) = bytes.withUnsafeMutableBytes { raw in
                fds.withUnsafeMutableBufferPointer { fdBuffer in
                    SystemCall.attempt {
                        cvs_recv_with_fds(socket.raw, raw.baseAddress! + received, count - received,
                                          fdBuffer.baseAddress, Int32(CVS_MAX_RECV_FDS), &fdCount, &flags)
                    }
                }
            }
            for i in 0..<Int(fdCount) { descriptors.append(OwnedDescriptor(taking: fds[i])) }
            if n < 0 {
                if code == EAGAIN { continue }
                if code == ECONNRESET {
                    throw .connection(.closedByPeer(during: "while we read \(what)", errno: Errno(rawValue: code)))
                }
                throw VirtioError.system("receiving \(what)", errno: code)
            }
            if n == 0 {
                throw .connection(.closedByPeer(during: received == 0 && what == "a message header" ? "" : "in the middle of \(what)", errno: nil))
            }
            if flags & Int32(CVS_RECV_CTRUNC | CVS_RECV_TOO_MANY_FDS) != 0 {
                throw .peerProtocol(.badFileDescriptors(request: what, problem: "more file descriptors attached than any message may carry"))
            }
            received += n
        }
        return bytes
    }
}
