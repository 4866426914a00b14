import Foundation
import VirtioCore
import VirtioUser
import XCTest

/// Kubernetes device-info documents (device-info-spec 1.0.0/1.1.0) and the network-status
/// annotation that carries them: socket and role come from them; anything else is refused with
/// the reason.
final class DeviceInfoTests: XCTestCase {
    private func parse(_ text: String, interface: String? = nil) throws(VirtioError) -> DeviceInfo {
        try DeviceInfo(json: Array(text.utf8), interface: interface)
    }

    /// The error `body` throws, checked to be of `domain`.
    @discardableResult
    private func refusal(_ domain: VirtioError.Domain, _ body: () throws(VirtioError) -> Void, line: UInt = #line) -> VirtioError? {
        do throws(VirtioError) {
            try body()
            XCTFail("expected a .\(domain) error", line: line)
            return nil
        } catch {
            XCTAssertEqual(error.domain, domain, "\(error)", line: line)
            return error
        }
    }

    func testTheSpecificationsExampleMeansWeListen() throws {
        let info = try parse(#"{"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": "server", "path": "/var/run/vhost.sock"}}"#)
        XCTAssertEqual(info, DeviceInfo(socketPath: "/var/run/vhost.sock", connectionMode: .server, version: "1.1.0"))
        let configuration = VirtioUserDevice.Configuration(deviceInfo: info)
        XCTAssertEqual(configuration.socketPath, "/var/run/vhost.sock")
        XCTAssertEqual(configuration.connectionMode, .server, "\"server\": the application in the container creates the socket")
    }

    func testClientModeAndVersion100() throws {
        let info = try parse(#"{"type":"vhost-user","version":"1.0.0","vhost-user":{"mode":"client","path":"/run/s/abc-net1"}}"#)
        XCTAssertEqual(info.connectionMode, .client)
        XCTAssertEqual(info.version, "1.0.0")
    }

    /// The network-status annotation's list (the spec's own example, trimmed): the entry for
    /// an interface, or the only vhost-user one.
    func testANetworkStatusListGivesTheInterfacesEntry() throws {
        let status = #"""
        [
          {"name": "cluster-wide-default", "interface": "eth0", "ips": ["192.0.2.2/24"], "mac": "02:11:22:33:44:54"},
          {"name": "sriov-network_a", "interface": "net1",
           "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:18:02.5"}}},
          {"name": "userspace_net1", "interface": "net3", "mac": "64:1f:74:32:2e:6d",
           "device-info": {"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": "client", "path": "/var/run/net3/vhost.sock"}}}
        ]
        """#
        XCTAssertEqual(try parse(status).socketPath, "/var/run/net3/vhost.sock")
        XCTAssertEqual(try parse(status, interface: "net3").connectionMode, .client)
        let pci = refusal(.configuration) { () throws(VirtioError) in _ = try parse(status, interface: "net1") }
        XCTAssertEqual(pci?.description.contains("type 'pci'"), true, "\(String(describing: pci))")
        let missing = refusal(.configuration) { () throws(VirtioError) in _ = try parse(status, interface: "net9") }
        XCTAssertEqual(missing?.description.contains("eth0, net1, net3"), true, "\(String(describing: missing))")
    }

    func testWhatIsRefusedSaysWhy() {
        let cases: [(String, String)] = [
            ("", "not valid JSON"),
            ("{", "not valid JSON"),
            (#"{"type":"vhost-user","version":"1.1.0"}"#, "no \"vhost-user\" map"),
            (#"{"type":"memif","version":"1.1.0","memif":{"role":"master","path":"/m","mode":"ethernet"}}"#, "type 'memif'"),
            (#"{"type":"vhost-user","version":"2.0.0","vhost-user":{"mode":"client","path":"/s"}}"#, "version '2.0.0'"),
            (#"{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"master","path":"/s"}}"#, "mode 'master'"),
            (#"{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"client","path":""}}"#, "empty vhost-user path"),
            (#"{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"client"}}"#, "no \"path\""),
            (#"{"type":1,"version":"1.1.0"}"#, "wrong type at type"),
            (#"[{"interface":"a","device-info":{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"client","path":"/a"}}},{"interface":"b","device-info":{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"client","path":"/b"}}}]"#,
             "exactly one vhost-user interface"),
        ]
        for (text, reason) in cases {
            let error = refusal(.configuration) { () throws(VirtioError) in _ = try parse(text) }
            XCTAssertEqual(error?.description.contains(reason), true, "\(text): \(String(describing: error)) should say \(reason)")
        }
    }

    func testAFileIsReadAndItsPathNamedInErrors() throws {
        let path = try makeSocketPath(self, name: "device.json")
        try #"{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"server","path":"/run/x.sock"}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let configuration = try VirtioUserDevice.Configuration(deviceInfo: path)
        XCTAssertEqual(configuration.connectionMode, .server)
        XCTAssertEqual(configuration.socketPath, "/run/x.sock")

        try "{}".write(toFile: path, atomically: true, encoding: .utf8)
        let bad = refusal(.configuration) { () throws(VirtioError) in _ = try DeviceInfo(contentsOfFile: path) }
        XCTAssertEqual(bad?.description.contains(path), true, "\(String(describing: bad))")
        let absent = refusal(.system) { () throws(VirtioError) in _ = try DeviceInfo(contentsOfFile: path + ".absent") }
        XCTAssertEqual(absent?.errno, .noSuchFileOrDirectory)
        try Data(count: 2 << 20).write(to: URL(fileURLWithPath: path))
        refusal(.configuration) { () throws(VirtioError) in _ = try DeviceInfo(contentsOfFile: path) }
    }
}

/// The downward API's annotations file, as a container reads Multus' network-status.
final class DownwardAPIDeviceInfoTests: XCTestCase {
    /// What Kubernetes writes: sorted `key=%q` lines (Go quoting: \" \\ \n, \u escapes).
    func testTheNetworkStatusAnnotationIsFoundAndUnquoted() throws {
        let status = #"[{"name":"default/userspace-ovs-net","interface":"net1","mac":"02:00:00:00:00:0a","device-info":{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"server","path":"/var/lib/cni/usrspcni/5a1b2c3d4e5f-net1"}}}]"#
        func goQuoted(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n") + "\""
        }
        let file = [
            "k8s.v1.cni.cncf.io/network-status=" + goQuoted(status.replacingOccurrences(of: "},{", with: "},\n{")),
            "k8s.v1.cni.cncf.io/networks=\"userspace-ovs-net\"",
            "note=\"caf\\u00e9 \\x41\\t\"",
        ].joined(separator: "\n")
        let path = try makeSocketPath(self, name: "annotations")
        try file.write(toFile: path, atomically: true, encoding: .utf8)
        let info = try DeviceInfo(contentsOfFile: path, interface: "net1")
        XCTAssertEqual(info.socketPath, "/var/lib/cni/usrspcni/5a1b2c3d4e5f-net1")
        XCTAssertEqual(info.connectionMode, .server)

        try "k8s.v1.cni.cncf.io/networks=\"x\"".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try DeviceInfo(contentsOfFile: path)
            XCTFail("no network-status annotation")
        } catch {
            XCTAssertTrue("\(error)".contains("network-status"), "\(error)")
        }
        // Broken quoting is refused, not guessed at.
        for line in [#"k8s.v1.cni.cncf.io/network-status="[\q]""#, #"k8s.v1.cni.cncf.io/network-status="[\u00"#, #"k8s.v1.cni.cncf.io/network-status=[]"#] {
            try line.write(toFile: path, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try DeviceInfo(contentsOfFile: path), line)
        }
    }

    /// Userspace CNI gives Multus no device-info; it annotates the pod itself: the container
    /// side of the attachment (vhost mode = the container's role, the socket file's name) and
    /// the mount point of the pod's shared-dir volume. What it writes, as the downward API
    /// shows it.
    func testUserspaceCNIsOwnAnnotationsGiveTheSocketAndRole() throws {
        let entry = """
        [{
            "containerId": "0958c8871b32aa",
            "ifName": "net1",
            "name": "userspace-ovs-net",
            "config": {
                "engine": "ovs-dpdk",
                "iftype": "vhostuser",
                "netType": "interface",
                "memif": {},
                "vhost": {"mode": "server", "socketfile": "0958c8871b32-net1"},
                "bridge": {}
            },
            "ipResult": {"interfaces": [{"name": "net1", "sandbox": "/proc/1/ns/net"}]}
        }]
        """
        let quoted = "\"" + entry.replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") + "\""
        let status = #"[{"name":"default","interface":"eth0","ips":["10.0.0.5"]},{"name":"default/userspace-ovs-net","interface":"net1"}]"#
        let file = [
            "k8s.v1.cni.cncf.io/network-status=\"" + status.replacingOccurrences(of: "\"", with: "\\\"") + "\"",
            "k8s.v1.cni.cncf.io/networks=\"userspace-ovs-net\"",
            "userspace/configuration-data=" + quoted,
            "userspace/mapped-dir=\"/var/lib/cni/usrspcni/\"",
        ].joined(separator: "\n")
        let path = try makeSocketPath(self, name: "annotations")
        try file.write(toFile: path, atomically: true, encoding: .utf8)
        for interface in ["net1", nil] {
            let info = try DeviceInfo(contentsOfFile: path, interface: interface)
            XCTAssertEqual(info.socketPath, "/var/lib/cni/usrspcni/0958c8871b32-net1")
            XCTAssertEqual(info.connectionMode, .server)
            XCTAssertEqual(info.version, "userspace-cni")
        }
        XCTAssertThrowsError(try DeviceInfo(contentsOfFile: path, interface: "net2"))
        // Without the mapped-dir annotation, the plugin's default mount point.
        try file.split(separator: "\n").dropLast().joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try DeviceInfo(contentsOfFile: path).socketPath, "/var/lib/cni/usrspcni/0958c8871b32-net1")
    }
}
