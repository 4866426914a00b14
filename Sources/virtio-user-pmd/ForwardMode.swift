import VirtioCore
import ArgumentParser

/// testpmd's forwarding modes, as far as one port goes.
enum ForwardMode: String, CaseIterable, ExpressibleByArgument {
    /// Generate frames; frames that come back are counted and freed.
    case txonly
    /// Count and free received frames.
    case rxonly
    /// Send every received frame straight back.
    case io
    /// Swap source and destination MAC, then send it back.
    case macswap
}
