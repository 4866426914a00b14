// http-hello: an HTTP/1.1 server on a virtio-user port, with no kernel network stack of its
// own. Every request gets "hello"; connections stay open (keep-alive) until the client closes.
//
//   http-hello SOCKET ADDRESS/PREFIX [PORT]      e.g. http-hello /tmp/tap.sock 192.0.2.2/24 8080
import Glibc
import VirtioUserIP

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count == 2 || arguments.count == 3, let port = UInt16(arguments.count == 3 ? arguments[2] : "80") else {
    print("usage: http-hello SOCKET ADDRESS/PREFIX [PORT]   (a vhost-user socket, an address such as 192.0.2.2/24, port 80 by default)")
    exit(arguments.first == "--help" ? 0 : 64)
}
do {
    let interface = try IPInterface(socketPath: arguments[0], cidr: arguments[1])
    let listener = try interface.listen(port: port)
    print("http-hello: serving http://\(interface.configuration.address):\(port)/")
    fflush(nil)
    try await withThrowingDiscardingTaskGroup { group in
        for try await connection in listener {
            group.addTask { try? await answer(connection) }
        }
    }
} catch {
    print("http-hello: error: \(error)")
    exit(2)
}
