#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import VirtioCore
import VirtioUser
import VirtioUserIP

/// A TCP sink on VirtioUserIP, for Scripts/bench-ip.sh: takes connections, discards what they
/// send, and prints a line per connection as it ends: its bytes, milliseconds and Mbit/s.
struct IPSink: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ip-sink",
        abstract: "A TCP sink on VirtioUserIP (lwIP on a virtio-user port): prints each connection's bytes and rate as it ends.",
        discussion: "Connects to the vhost-user back-end at --socket, takes --address on it and listens on --port until killed.")

    @Option(help: "The back-end's socket.")
    var socket: String

    @Option(help: "The interface's IPv4 address and prefix, such as 192.0.2.2/24.")
    var address: String

    @Option(help: "The TCP port to listen on.")
    var port: UInt16 = 5001

    func validate() throws {
        guard IPInterface.Configuration(cidr: address) != nil else { throw ValidationError("--address '\(address)' is not IPv4 CIDR (a.b.c.d/n).") }
    }

    func run() async throws {
        guard let configuration = IPInterface.Configuration(cidr: address) else { throw ExitCode(64) }
        let device = try VirtioUserDevice(configuration: .init(socketPath: socket))
        try device.start()
        let interface = try IPInterface(device: device, configuration: configuration)
        let listener = try interface.listen(port: port)
        print("ip-sink: listening on \(configuration.address):\(port)")
        fflush(nil)
        await withDiscardingTaskGroup { group in
            do {
                for try await connection in listener {
                    group.addTask { await Self.drain(connection) }
                }
            } catch {
                print("ip-sink: error: \(error)")
            }
        }
        interface.close()
        device.stop()
    }

    private static func drain(_ connection: TCPConnection) async {
        let start = MonotonicClock.nanoseconds()
        var bytes = 0
        do {
            for try await chunk in connection.inbound { bytes += chunk.count }
        } catch {
            print("ip-sink: \(connection.remote): \(error)")
        }
        connection.close()
        let nanoseconds = max(1, MonotonicClock.nanoseconds() - start)
        print("ip-sink: \(bytes) bytes in \(nanoseconds / 1_000_000) ms = \(UInt64(bytes) * 8_000 / nanoseconds) Mbit/s")
        fflush(nil)
    }
}
