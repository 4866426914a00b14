import VirtioUser

/// The run ended with the link down: the back-end went away or broke the protocol meanwhile.
struct LinkWentDown: Error, CustomStringConvertible {
    let reason: VirtioUserDevice.LinkDownReason

    var description: String { "The link went down during the run: \(reason)." }
}
