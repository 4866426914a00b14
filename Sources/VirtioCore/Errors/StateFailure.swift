/// A call the object cannot take in its present state.
public enum StateFailure: Sendable, Equatable, CustomStringConvertible {
    /// `what` (the device, the back-end, the switch) is already running.
    case alreadyRunning(String)
    /// `what` was stopped for good.
    case stopped(String)
    /// Queue pair `queuePair` is already capturing.
    case alreadyCapturing(queuePair: Int)

    public var description: String {
        switch self {
        case .alreadyRunning(let what): "\(what) is already running: start() was called twice."
        case .stopped(let what): "\(what) was stopped; create a new one to serve again."
        case .alreadyCapturing(let pair): "Queue pair \(pair) is already capturing; stop that capture first."
        }
    }
}
