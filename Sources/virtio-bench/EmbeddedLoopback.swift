#if canImport(Glibc)
import Glibc
#endif
import VhostUserBackend
import VirtioUser

/// Runs `body` with a device started against an in-process loopback back-end on a private
/// socket; `adjust` sets the device's configuration. Both stop afterwards.
func withEmbeddedLoopback<T>(
    _ adjust: (inout VirtioUserDevice.Configuration) -> Void = { _ in },
    _ body: (VirtioUserDevice) throws -> T
) throws -> T {
    let directory = "/tmp/virtio-bench-\(getpid())"
    mkdir(directory, 0o700)
    defer { rmdir(directory) }
    let socket = directory + "/vhost.sock"
    let backend = try VhostUserBackend(configuration: .init(socketPath: socket, mode: .loopback))
    try backend.start()
    defer { backend.stop() }
    var configuration = VirtioUserDevice.Configuration(socketPath: socket)
    adjust(&configuration)
    let device = try VirtioUserDevice(configuration: configuration)
    try device.start()
    defer { device.stop() }
    return try body(device)
}
