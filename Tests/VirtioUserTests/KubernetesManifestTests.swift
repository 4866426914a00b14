import Foundation
import VirtioCore
import VirtioUser
import XCTest

/// Docs/KUBERNETES.md's manifests are real: they parse (PyYAML, as kubectl would read them),
/// the NetworkAttachmentDefinition's config is the userspace CNI configuration for OVS-DPDK
/// with our device listening, and the pod is wired so that — given the annotations userspace
/// CNI writes for that configuration — the device finds the socket in the directory the pod
/// mounts. No cluster runs here.
final class KubernetesManifestTests: XCTestCase {
    /// The documents of every ```yaml block, as JSON objects.
    private func manifests() throws -> [[String: Any]] {
        let script = """
        import json, re, sys, yaml
        text = open(sys.argv[1]).read()
        blocks = re.findall(r"```yaml\\n(.*?)```", text, re.S)
        print(json.dumps([doc for block in blocks for doc in yaml.safe_load_all(block)]))
        """
        let result = try runProgram("/usr/bin/python3", ["-c", script, repositoryRoot.appendingPathComponent("Docs/KUBERNETES.md").path])
        XCTAssertEqual(result.status, 0, result.errors)
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]], result.output)
    }

    func testTheManifestsParseAndWireTheDeviceToTheSocketThePluginMakes() throws {
        let documents = try manifests()
        XCTAssertEqual(documents.count, 2)
        let attachment = try XCTUnwrap(documents.first { $0["kind"] as? String == "NetworkAttachmentDefinition" })
        let pod = try XCTUnwrap(documents.first { $0["kind"] as? String == "Pod" })

        // The attachment: userspace CNI, OVS-DPDK connecting (dpdkvhostuserclient), our device listening.
        let name = try XCTUnwrap((attachment["metadata"] as? [String: Any])?["name"] as? String)
        let configText = try XCTUnwrap((attachment["spec"] as? [String: Any])?["config"] as? String)
        let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(configText.utf8)) as? [String: Any], "spec.config is JSON")
        XCTAssertEqual(config["type"] as? String, "userspace")
        XCTAssertEqual(config["name"] as? String, name)
        let host = try XCTUnwrap(config["host"] as? [String: Any])
        let container = try XCTUnwrap(config["container"] as? [String: Any])
        XCTAssertEqual(host["engine"] as? String, "ovs-dpdk")
        XCTAssertEqual(host["iftype"] as? String, "vhostuser")
        XCTAssertEqual(host["netType"] as? String, "bridge")
        XCTAssertEqual((host["vhost"] as? [String: Any])?["mode"] as? String, "client", "OVS connects: dpdkvhostuserclient")
        XCTAssertEqual(container["iftype"] as? String, "vhostuser")
        XCTAssertEqual((container["vhost"] as? [String: Any])?["mode"] as? String, "server", "the device listens")

        // The pod: asks for the attachment, mounts shared-dir and the annotations, runs the device on them.
        let metadata = try XCTUnwrap(pod["metadata"] as? [String: Any])
        XCTAssertEqual((metadata["annotations"] as? [String: Any])?["k8s.v1.cni.cncf.io/networks"] as? String, name)
        let spec = try XCTUnwrap(pod["spec"] as? [String: Any])
        let volumes = try XCTUnwrap(spec["volumes"] as? [[String: Any]])
        let shared = try XCTUnwrap(volumes.first { $0["name"] as? String == "shared-dir" }, "userspace CNI looks for a volume named shared-dir")
        XCTAssertNotNil((shared["hostPath"] as? [String: Any])?["path"] as? String)
        let podinfo = try XCTUnwrap(volumes.first { $0["downwardAPI"] != nil })
        let items = try XCTUnwrap((podinfo["downwardAPI"] as? [String: Any])?["items"] as? [[String: Any]])
        let annotationsItem = try XCTUnwrap(items.first { ($0["fieldRef"] as? [String: Any])?["fieldPath"] as? String == "metadata.annotations" })
        let app = try XCTUnwrap((spec["containers"] as? [[String: Any]])?.first)
        let mounts = try XCTUnwrap(app["volumeMounts"] as? [[String: Any]])
        let mappedDirectory = try XCTUnwrap(mounts.first { $0["name"] as? String == "shared-dir" }?["mountPath"] as? String)
        let podinfoMount = try XCTUnwrap(mounts.first { $0["name"] as? String == podinfo["name"] as? String }?["mountPath"] as? String)
        let command = try XCTUnwrap(app["command"] as? [String])
        XCTAssertEqual(command.first, "virtio-user-pmd")
        let infoIndex = try XCTUnwrap(command.firstIndex(of: "--device-info"))
        XCTAssertEqual(command[infoIndex + 1], podinfoMount + "/" + (annotationsItem["path"] as? String ?? ""))
        let interface = try XCTUnwrap(command.firstIndex(of: "--interface").map { command[$0 + 1] })

        // What userspace CNI writes for this pod, in the downward API's format; the device reads
        // the socket and role from it.
        let containerID = "0958c8871b32f00d"
        let socketFile = "\(containerID.prefix(12))-\(interface)"
        let entry: [String: Any] = [
            "containerId": containerID, "ifName": interface, "name": name,
            "config": container.merging(["vhost": ["mode": "server", "socketfile": socketFile]]) { $1 },
        ]
        let configurationData = String(decoding: try JSONSerialization.data(withJSONObject: [entry]), as: UTF8.self)
        func goQuoted(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        let annotations = [
            "k8s.v1.cni.cncf.io/networks=" + goQuoted(name),
            "userspace/configuration-data=" + goQuoted(configurationData),
            "userspace/mapped-dir=" + goQuoted(mappedDirectory),
        ].joined(separator: "\n")
        let file = try makeSocketPath(self, name: "annotations")
        try annotations.write(toFile: file, atomically: true, encoding: .utf8)
        let configuration = try VirtioUserDevice.Configuration(deviceInfo: file, interface: interface)
        XCTAssertEqual(configuration.socketPath, mappedDirectory + "/" + socketFile)
        XCTAssertEqual(configuration.connectionMode, .server)
    }
}
