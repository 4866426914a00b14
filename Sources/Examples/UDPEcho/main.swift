// udp-echo: sends every UDP datagram back to where it came from, on a virtio-user port with no
// kernel network stack of its own.
//
//   udp-echo SOCKET ADDRESS/PREFIX [PORT]        e.g. udp-echo /tmp/tap.sock 192.0.2.2/24 7
import Glibc
import VirtioUserIP

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count == 2 || arguments.count == 3, let port = UInt16(arguments.count == 3 ? arguments[2] : "7") else {
    print("usage: udp-echo SOCKET ADDRESS/PREFIX [PORT]   (a vhost-user socket, an address such as 192.0.2.2/24, port 7 by default)")
    exit(arguments.first == "--help" ? 0 : 64)
}
do {
    let interface = try IPInterface(socketPath: arguments[0], cidr: arguments[1])
    let socket = try interface.bindUDP(port: port)
    print("udp-echo: echoing on \(interface.configuration.address):\(port)")
    fflush(nil)
    for try await datagram in socket.datagrams {
        try? socket.send(datagram.payload, to: datagram.remote)
    }
} catch {
    print("udp-echo: error: \(error)")
    exit(2)
}
