// nio-http-hello: http-hello's server written as a swift-nio pipeline (NIOHTTP1's handlers)
// over VirtioUserIP's TCP connections, through VirtioUserIPNIO.
//
//   nio-http-hello SOCKET ADDRESS/PREFIX [PORT]      e.g. nio-http-hello /tmp/tap.sock 192.0.2.2/24 8080
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix
import VirtioUserIP
import VirtioUserIPNIO

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count == 2 || arguments.count == 3, let port = UInt16(arguments.count == 3 ? arguments[2] : "80") else {
    print("usage: nio-http-hello SOCKET ADDRESS/PREFIX [PORT]   (a vhost-user socket, an address such as 192.0.2.2/24, port 80 by default)")
    exit(arguments.first == "--help" ? 0 : 64)
}
do {
    let interface = try IPInterface(socketPath: arguments[0], cidr: arguments[1])
    let listener = try interface.listen(port: port)
    print("nio-http-hello: serving http://\(interface.configuration.address):\(port)/")
    fflush(nil)
    try await listener.serve(on: MultiThreadedEventLoopGroup.singleton) { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.configureHTTPServerPipeline()
            try channel.pipeline.syncOperations.addHandler(Hello())
        }
    }
} catch {
    print("nio-http-hello: error: \(error)")
    exit(2)
}
