#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import VirtioCore

extension DeviceInfo {
    /// Reads the annotation Kubernetes' userspace CNI plugin puts on a pod
    /// (`userspace/configuration-data`: a JSON list, one entry per attachment, each with the
    /// container's side of the NetworkAttachmentDefinition) for `interface` — or, without it,
    /// the only vhost-user entry. The socket is `mappedDirectory` (the `userspace/mapped-dir`
    /// annotation: where the pod mounts its `shared-dir` volume) joined with the entry's
    /// socket file; the entry's vhost mode is the container's role, as in a device-info document.
    public init(userspaceConfiguration json: [UInt8], mappedDirectory: String, interface: String? = nil) throws(VirtioError) {
        let entries: [Entry]
        do {
            entries = try JSONDecoder().decode([Entry].self, from: Data(json))
        } catch {
            throw Self.invalid("has a userspace/configuration-data annotation that is not a list of attachments (\(Self.reason(error)))")
        }
        let config = try Self.attachment(
            entries, interface: interface, name: \.ifName, isVhostUser: { $0.config?.iftype == "vhostuser" },
            payload: \.config, what: "a userspace/configuration-data annotation without", vhostUser: "vhostuser")
        guard config.iftype == "vhostuser" else {
            throw Self.invalid("has a userspace CNI attachment of iftype '\(config.iftype ?? "none")', not vhostuser")
        }
        guard let vhost = config.vhost, let modeName = vhost.mode, let mode = ConnectionMode(rawValue: modeName) else {
            throw Self.invalid("has a userspace CNI vhostuser attachment without a vhost mode of \"client\" or \"server\"")
        }
        guard let file = vhost.socketfile, !file.isEmpty, !file.contains("/") else {
            throw Self.invalid("has a userspace CNI vhostuser attachment without a socket file name")
        }
        let directory = mappedDirectory.hasSuffix("/") ? String(mappedDirectory.dropLast()) : mappedDirectory
        self.init(socketPath: directory + "/" + file, connectionMode: mode, version: "userspace-cni")
    }

    // The JSON shapes (userspace-cni-network-plugin's ConfigurationData and UserSpaceConf).
    private struct Vhost: Decodable {
        var mode: String?
        var socketfile: String?
    }

    private struct Config: Decodable {
        var iftype: String?
        var vhost: Vhost?
    }

    private struct Entry: Decodable {
        var ifName: String?
        var config: Config?
    }
}
