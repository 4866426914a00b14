import NIOCore

/// Channel options of VirtioUserIPNIO's channels, beyond NIO's own.
public enum TCPConnectionChannelOptions {
    /// How long a close waits for writes already flushed that the stack has not taken yet
    /// (30 seconds unless set). They go before the FIN, as a closed socket's send buffer does;
    /// a peer that has not taken them in time gets a reset, and their promises fail. Zero
    /// resets at once, as `SO_LINGER` 0 does on a socket.
    public static let closeLinger = Types.CloseLingerOption()

    public enum Types {
        /// ``TCPConnectionChannelOptions/closeLinger``'s type.
        public struct CloseLingerOption: ChannelOption, Sendable {
            public typealias Value = TimeAmount
            public init() {}
        }
    }
}
