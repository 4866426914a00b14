// http-hello: an HTTP/1.1 server on a virtio-user port, with no kernel network stack of its
// own. Every request gets "hello"; connections stay open (keep-alive) until the client closes.
//
//   http-hello SOCKET ADDRESS/PREFIX [PORT]      e.g. http-hello /tmp/tap.sock 192.0.2.2/24 8080
import Glibc
import VirtioUser
import VirtioUserIP

let arguments = CommandLine.arguments.dropFirst()
guard arguments.count == 2 || arguments.count == 3, let configuration = IPInterface.Configuration(cidr: arguments[2]),
      let port = UInt16(arguments.count == 3 ? arguments[3] : "80")
else {
    print("usage: http-hello SOCKET ADDRESS/PREFIX [PORT]   (the vhost-user socket, an IPv4 address such as 192.0.2.2/24, port 80 by default)")
    exit(64)
}

let device = try VirtioUserDevice(configuration: .init(socketPath: arguments[1]))
try device.start()
let interface = try IPInterface(device: device, configuration: configuration)
let listener = try interface.listen(port: port)
print("http-hello: serving http://\(configuration.address):\(port)/")
fflush(nil)
try await withThrowingDiscardingTaskGroup { group in
    for try await connection in listener {
        group.addTask { try? await answer(connection) }
    }
}
