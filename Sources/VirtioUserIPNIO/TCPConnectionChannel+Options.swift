import NIOCore

/// The options a pipeline over a ``VirtioUserIP/TCPConnection`` can use: NIO's auto-read,
/// `allowRemoteHalfClosure`, `maxMessagesPerRead`, the write-buffer water marks, and
/// ``TCPConnectionChannelOptions/closeLinger``. Others (socket options but TCP_NODELAY, which
/// lwIP's connections always have) are refused with `ChannelError.operationUnsupported`.
extension TCPConnectionChannel {
    func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        guard eventLoop.inEventLoop else { return eventLoop.submit { try self.setOption0(option, value: value) } }
        return eventLoop.makeCompletedFuture { try setOption0(option, value: value) }
    }

    func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        guard eventLoop.inEventLoop else { return eventLoop.submit { try self.getOption0(option) } }
        return eventLoop.makeCompletedFuture { try getOption0(option) }
    }

    var syncOptions: NIOSynchronousChannelOptions? { SynchronousOptions(channel: self) }

    private struct SynchronousOptions: NIOSynchronousChannelOptions {
        let channel: TCPConnectionChannel

        func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
            try channel.setOption0(option, value: value)
        }

        func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
            try channel.getOption0(option)
        }
    }

    private static let noDelay = ChannelOptions.Types.SocketOption(level: .tcp, name: .tcp_nodelay)

    func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        eventLoop.preconditionInEventLoop()
        switch (option, value) {
        case (is ChannelOptions.Types.AutoReadOption, let on as Bool):
            let was = autoRead
            autoRead = on
            if on, !was { read0() } else if !on { readRequested = false }
        case (is ChannelOptions.Types.AllowRemoteHalfClosureOption, let allow as Bool):
            allowRemoteHalfClosure = allow
        case (is ChannelOptions.Types.MaxMessagesPerReadOption, let count as UInt):
            maxMessagesPerRead = max(count, 1)
        case (is ChannelOptions.Types.WriteBufferWaterMarkOption, let marks as ChannelOptions.Types.WriteBufferWaterMark):
            waterMark = marks
            if pendingBytes > marks.high { setWritable(false) } else if pendingBytes < marks.low { setWritable(true) }
        case (let socket as ChannelOptions.Types.SocketOption, let on as SocketOptionValue) where socket == Self.noDelay && on != 0:
            break
        case (is TCPConnectionChannelOptions.Types.CloseLingerOption, let limit as TimeAmount):
            closeLinger = limit
        default:
            throw ChannelError.operationUnsupported
        }
    }

    func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        eventLoop.preconditionInEventLoop()
        let value: Any
        switch option {
        case is ChannelOptions.Types.AutoReadOption: value = autoRead
        case is ChannelOptions.Types.AllowRemoteHalfClosureOption: value = allowRemoteHalfClosure
        case is ChannelOptions.Types.MaxMessagesPerReadOption: value = maxMessagesPerRead
        case is ChannelOptions.Types.WriteBufferWaterMarkOption: value = waterMark
        case let socket as ChannelOptions.Types.SocketOption where socket == Self.noDelay: value = SocketOptionValue(1)
        case is TCPConnectionChannelOptions.Types.CloseLingerOption: value = closeLinger
        default: throw ChannelError.operationUnsupported
        }
        guard let typed = value as? Option.Value else { throw ChannelError.operationUnsupported }
        return typed
    }
}
