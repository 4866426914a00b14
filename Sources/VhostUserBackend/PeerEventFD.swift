import VirtioCore

extension BackendVring {
    /// Signals the call fd, if the front-end gave one (it polls otherwise). Throws when the
    /// front-end made the write block (``EventNotifier/signal()``).
    @inline(__always)
    func notifyCall() throws(VirtioError) {
        guard let call else { return }
        try call.signal()
    }
}
