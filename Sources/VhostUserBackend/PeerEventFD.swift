#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import VirtioCore

/// Kick and call fds as a hostile front-end may leave them: it shares their open file, so it
/// can clear O_NONBLOCK, drain a kick fd or fill a call fd's counter whenever it likes. These
/// never sleep on its terms (see `cvs_peer_eventfd_signal`).
extension EventNotifier {
    /// How long a call-fd write may block before it is interrupted and the session ended.
    static let peerWriteTimeoutMilliseconds: Int32 = 10

    /// Signals a front-end's call fd. Throws when the front-end made the write block.
    @inline(__always)
    func signalPeer(ring: Int) throws(VirtioError) {
        let result = cvs_peer_eventfd_signal(descriptor.raw, Self.peerWriteTimeoutMilliseconds)
        if result != 0 { throw Self.callFailure(result, ring: ring) }
    }

    /// Reads and clears a front-end's kick fd without ever sleeping.
    func drainPeer() {
        var value: UInt64 = 0
        _ = cvs_peer_eventfd_drain(descriptor.raw, &value)
    }

    private static func callFailure(_ result: Int32, ring: Int) -> VirtioError {
        if result == -ETIMEDOUT {
            return VirtioError(
                .protocolViolation,
                "Ring \(ring)'s call fd blocked a write for \(peerWriteTimeoutMilliseconds) ms: the front-end cleared O_NONBLOCK on it and filled its counter.")
        }
        return VirtioError.system("signalling ring \(ring)'s call fd", errno: -result)
    }
}

extension BackendVring {
    /// Signals the call fd, if the front-end gave one (it polls otherwise).
    @inline(__always)
    func notifyCall() throws(VirtioError) {
        if let call { try call.signalPeer(ring: index) }
    }
}
