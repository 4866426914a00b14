import Foundation
import XCTest

/// The container model: our back-end on the host, the device in its own mount, PID and network
/// namespaces with the socket bind-mounted at /var/run/usvhost, as an unprivileged user — what
/// `docker run -v /tmp/sock0:/var/run/usvhost …` sets up — through Scripts/container-run.sh.
final class ContainerModelTests: XCTestCase {
    func testDeviceInNamespacesAsNobodyTalksToTheHostBackend() throws {
        try runInContainer([])
    }

    /// Wired as Kubernetes' userspace CNI does: a socket directory and a device-info file
    /// mounted in; the device takes socket and role from the file, both ways round.
    func testDeviceInfoFileWiringBothWays() throws {
        for mode in ["client", "server"] {
            let text = try runInContainer(["--device-info", mode])
            XCTAssertTrue(text.contains("device-info /var/run/devinfo/net1-device.json (\(mode))"), text)
            XCTAssertTrue(text.contains(mode == "server" ? "connected to our /var/run/vhostuser/" : "at /var/run/vhostuser/"), text)
        }
    }

    @discardableResult
    private func runInContainer(_ options: [String]) throws -> String {
        guard getuid() == 0 else {
            throw XCTSkip("namespaces and bind mounts need root; CI runs as root")
        }
        let script = repositoryRoot.appendingPathComponent("Scripts/container-run.sh").path
        let result = try runProgram(script, ["--bin", productsDirectory.path] + options + ["--", "--duration", "1", "--stats-period", "0"])
        let text = result.output + result.errors
        XCTAssertEqual(result.status, 0, text)

        func field(_ prefix: String, _ name: String) -> String? {
            guard let line = text.split(separator: "\n").first(where: { $0.contains(prefix) }),
                  let range = line.range(of: name + " ") else { return nil }
            return String(line[range.upperBound...].prefix(while: { !$0.isWhitespace && $0 != "," }))
        }
        let hostNet = field("host net namespace", "namespace")
        let containerNet = field("container net namespace", "namespace")
        XCTAssertNotNil(hostNet, text)
        XCTAssertNotEqual(hostNet, containerNet, "the device must run in its own network namespace")
        XCTAssertEqual(field("container net namespace", "pid"), "1", "the device's shell is PID 1 of its own namespace")
        XCTAssertEqual(field("container net namespace", "uid"), "65534", "the device runs unprivileged")

        func count(_ label: String) -> UInt64? {
            guard let line = text.split(separator: "\n").first(where: { $0.contains(label) }),
                  let range = line.range(of: label) else { return nil }
            return UInt64(line[range.upperBound...].drop(while: { $0 == " " }).prefix(while: \.isNumber))
        }
        let tx = count("TX packets:"), rx = count("RX packets:")
        XCTAssertNotNil(tx, text)
        XCTAssertGreaterThan(tx ?? 0, 0)
        XCTAssertEqual(tx, rx, "every frame comes back through the host back-end")
        XCTAssertEqual(count("received"), tx, text)
        XCTAssertEqual(count("sent"), tx, text)
        XCTAssertTrue(text.contains("protocol errors 0"), text)
        return text
    }
}
