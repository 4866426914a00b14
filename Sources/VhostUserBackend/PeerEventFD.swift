import VirtioCore

extension BackendVring {
    /// Signals the call fd, if the front-end gave one (it polls otherwise). Throws, naming the
    /// ring, when the front-end made the write block (``EventNotifier/signal()``).
    @inline(__always)
    func notifyCall() throws(VirtioError) {
        guard let call else { return }
        do throws(VirtioError) { try call.signal() } catch {
            throw VirtioError(error.kind, "Ring \(index)'s call fd: \(error.message)", errno: error.errno)
        }
    }
}
