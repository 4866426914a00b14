// udp-echo: sends every UDP datagram back to where it came from, on a virtio-user port with no
// kernel network stack of its own.
//
//   udp-echo SOCKET ADDRESS/PREFIX [PORT]        e.g. udp-echo /tmp/tap.sock 192.0.2.2/24 7
import Glibc
import VirtioUser
import VirtioUserIP

let arguments = CommandLine.arguments.dropFirst()
guard arguments.count == 2 || arguments.count == 3, let configuration = IPInterface.Configuration(cidr: arguments[2]),
      let port = UInt16(arguments.count == 3 ? arguments[3] : "7")
else {
    print("usage: udp-echo SOCKET ADDRESS/PREFIX [PORT]   (the vhost-user socket, an IPv4 address such as 192.0.2.2/24, port 7 by default)")
    exit(64)
}

let device = try VirtioUserDevice(configuration: .init(socketPath: arguments[1]))
try device.start()
let interface = try IPInterface(device: device, configuration: configuration)
let socket = try interface.bindUDP(port: port)
print("udp-echo: echoing on \(configuration.address):\(port)")
fflush(nil)
for try await datagram in socket.datagrams {
    try? socket.send(datagram.payload, to: datagram.remote)
}
