extension VirtioError {
    /// The case of a ``VirtioError`` without its payload, for code that only sorts errors
    /// (counters, logs, tests that check which domain failed).
    package enum Domain: String, Sendable, Equatable {
        case connection, negotiation, memory, ringViolation, peerProtocol, configuration, state, system
    }

    /// Which case this is.
    package var domain: Domain {
        switch self {
        case .connection: .connection
        case .negotiation: .negotiation
        case .memory: .memory
        case .ringViolation: .ringViolation
        case .peerProtocol: .peerProtocol
        case .configuration: .configuration
        case .state: .state
        case .system: .system
        }
    }
}
