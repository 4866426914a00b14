import NIOCore
import NIOHTTP1

/// Answers every request with "hello", or with the size of its body when it had one; keeps
/// the connection open unless the client asked to close it.
final class Hello: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private var bodyBytes = 0
    private var keepAlive = true

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            bodyBytes = 0
            keepAlive = head.isKeepAlive
        case .body(let chunk):
            bodyBytes += chunk.readableBytes
        case .end:
            let body = context.channel.allocator.buffer(string: bodyBytes > 0 ? "received \(bodyBytes) bytes\n" : "hello\n")
            var head = HTTPResponseHead(version: .http1_1, status: .ok)
            head.headers.add(name: "Content-Type", value: "text/plain")
            head.headers.add(name: "Content-Length", value: "\(body.readableBytes)")
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            let sent = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
                sent.whenComplete { _ in loopBound.value.close(promise: nil) }
            }
        }
    }
}
