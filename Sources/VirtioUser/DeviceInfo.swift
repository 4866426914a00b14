#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import VirtioCore

/// A Kubernetes device-info document for a vhost-user interface (the Network Plumbing Working
/// Group's device-info-spec, versions 1.0.0 and 1.1.0): the socket's path and who creates it.
///
/// Userspace CNI plugins and device plugins write one per attachment; Multus copies it into the
/// pod's `k8s.v1.cni.cncf.io/network-status` annotation as `"device-info"`. All three forms are
/// read: the document, the annotation's JSON list, and the downward API's annotations file
/// (`fieldPath: metadata.annotations`), which is how a container sees the annotation:
///
/// ```json
/// {"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": "server", "path": "/var/run/vhost.sock"}}
/// ```
///
/// `"mode"` is the role of the application in the container: `"server"` means it creates the
/// socket and the host's switch connects (our device listens); `"client"` means the host's
/// switch listens and we connect.
public struct DeviceInfo: Sendable, Equatable {
    /// The vhost-user socket.
    public var socketPath: String
    /// Who listens: `.server`, this device; `.client`, the host's back-end.
    public var connectionMode: ConnectionMode
    /// The device-info-spec version the document declares ("1.0.0", "1.1.0"), or
    /// "userspace-cni" when it came from userspace CNI's own annotations.
    public var version: String

    /// Versions of the specification whose vhost-user fields this reads.
    public static let supportedVersions = ["1.0.0", "1.1.0"]
    /// Larger files are refused unread: a device-info document is a few hundred bytes.
    static let maximumFileSize = 1 << 20

    /// A document's contents, given directly.
    public init(socketPath: String, connectionMode: ConnectionMode, version: String = "1.1.0") {
        self.socketPath = socketPath
        self.connectionMode = connectionMode
        self.version = version
    }

    /// Parses a device-info object, or a network-status list (the annotation's value) from
    /// which the entry for `interface` is taken — or, without `interface`, the only entry of
    /// type vhost-user.
    public init(json: [UInt8], interface: String? = nil) throws(VirtioError) {
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(json))
        } catch {
            throw Self.invalid("is not a device-info object or a network-status list (\(Self.reason(error)))")
        }
        let info: Info
        switch document {
        case .single(let single):
            info = single
        case .list(let entries):
            info = try Self.attachment(
                entries, interface: interface, name: \.interface, isVhostUser: { $0.deviceInfo?.type == "vhost-user" },
                payload: \.deviceInfo, what: "a network-status list without device-info for", vhostUser: "vhost-user")
        }
        guard info.type == "vhost-user" else {
            throw Self.invalid("describes a device of type '\(info.type)', not vhost-user")
        }
        guard Self.supportedVersions.contains(info.version) else {
            throw Self.invalid("has version '\(info.version)'; this reads \(Self.supportedVersions.joined(separator: " and "))")
        }
        guard let vhostUser = info.vhostUser else {
            throw Self.invalid("has no \"vhost-user\" map")
        }
        guard let mode = ConnectionMode(rawValue: vhostUser.mode) else {
            throw Self.invalid("has vhost-user mode '\(vhostUser.mode)'; the specification allows \"client\" and \"server\"")
        }
        guard !vhostUser.path.isEmpty else { throw Self.invalid("has an empty vhost-user path") }
        socketPath = vhostUser.path
        connectionMode = mode
        version = info.version
    }

    /// Reads the device-info or network-status file at `path` (see ``init(json:interface:)``),
    /// or a downward API annotations file: its network-status annotation, or else the
    /// annotations userspace CNI writes (see ``init(userspaceConfiguration:mappedDirectory:interface:)``).
    public init(contentsOfFile path: String, interface: String? = nil) throws(VirtioError) {
        let bytes = try Self.readFile(path)
        do throws(VirtioError) {
            self = try Self.parse(bytes, interface: interface)
        } catch {
            guard case .configuration(let setting) = error else { throw error }
            throw .configuration(InvalidSetting(field: "device-info file", value: path, requirement: setting.requirement))
        }
    }

    private static func parse(_ bytes: [UInt8], interface: String?) throws(VirtioError) -> DeviceInfo {
        let first = bytes.first { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }
        if first == UInt8(ascii: "{") || first == UInt8(ascii: "[") { return try DeviceInfo(json: bytes, interface: interface) }
        let status = DownwardAPIAnnotations.value(of: DownwardAPIAnnotations.networkStatus, in: bytes)
        let userspace = DownwardAPIAnnotations.value(of: DownwardAPIAnnotations.userspaceConfiguration, in: bytes)
        if let status {
            do throws(VirtioError) {
                return try DeviceInfo(json: status, interface: interface)
            } catch {
                // Userspace CNI gives Multus no device-info: its own annotation may have it.
                if userspace == nil { throw error }
            }
        }
        guard let userspace else {
            throw invalid("is not a device-info object, a network-status list, or a downward API annotations file with a \(DownwardAPIAnnotations.networkStatus) or \(DownwardAPIAnnotations.userspaceConfiguration) annotation")
        }
        let mapped = DownwardAPIAnnotations.value(of: DownwardAPIAnnotations.userspaceMappedDirectory, in: bytes)
            .map { String(decoding: $0, as: UTF8.self) } ?? DownwardAPIAnnotations.userspaceDefaultMappedDirectory
        return try DeviceInfo(userspaceConfiguration: userspace, mappedDirectory: mapped, interface: interface)
    }

    private static func readFile(_ path: String) throws(VirtioError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw VirtioError.system("open(\(path))", errno: errno, hint: "Give the device-info file the CNI or device plugin wrote (under /var/run/k8s.cni.cncf.io/devinfo/).")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw VirtioError.system("read(\(path))", errno: errno)
            }
            if count == 0 { return bytes }
            bytes += chunk[0..<count]
            guard bytes.count <= maximumFileSize else {
                throw .invalid("device-info file", path, "at most \(maximumFileSize) bytes")
            }
        }
    }

    /// The attachment for `interface` in a list of them — without it, the only vhost-user
    /// one — with its `payload`; else an error listing the interfaces there are.
    static func attachment<Entry, Payload>(
        _ entries: [Entry], interface: String?, name: (Entry) -> String?, isVhostUser: (Entry) -> Bool,
        payload: (Entry) -> Payload?, what: String, vhostUser: String
    ) throws(VirtioError) -> Payload {
        let candidates = entries.filter { entry in interface.map { name(entry) == $0 } ?? isVhostUser(entry) }
        guard candidates.count == 1, let found = payload(candidates[0]) else {
            let names = entries.compactMap(name).joined(separator: ", ")
            let wanted = interface.map { "the interface \($0)" } ?? "exactly one \(vhostUser) interface"
            throw invalid("is \(what) \(wanted) (interfaces: \(names.isEmpty ? "none" : names))")
        }
        return found
    }

    static func invalid(_ requirement: String) -> VirtioError {
        .invalid("device-info", "document", requirement)
    }

    static func reason(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "no \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            "a wrong type at \(context.codingPath.map(\.stringValue).joined(separator: "."))"
        default: "not valid JSON"
        }
    }

    // The JSON shapes.
    private struct VhostUser: Decodable {
        var mode: String
        var path: String
    }

    private struct Info: Decodable {
        var type: String
        var version: String
        var vhostUser: VhostUser?

        enum CodingKeys: String, CodingKey {
            case type, version
            case vhostUser = "vhost-user"
        }
    }

    private struct StatusEntry: Decodable {
        var interface: String?
        var deviceInfo: Info?

        enum CodingKeys: String, CodingKey {
            case interface
            case deviceInfo = "device-info"
        }
    }

    private enum Document: Decodable {
        case single(Info)
        case list([StatusEntry])

        init(from decoder: any Decoder) throws {
            if let list = try? [StatusEntry](from: decoder) {
                self = .list(list)
            } else {
                self = .single(try Info(from: decoder))
            }
        }
    }
}

extension VirtioUserDevice.Configuration {
    /// A configuration for the socket and role a device-info document gives (see
    /// ``DeviceInfo``), with defaults for the rest.
    public init(deviceInfo: DeviceInfo) {
        self.init(socketPath: deviceInfo.socketPath)
        connectionMode = deviceInfo.connectionMode
    }

    /// A configuration from the device-info file at `path` (or a network-status list, taking
    /// `interface`'s entry).
    public init(deviceInfo path: String, interface: String? = nil) throws(VirtioError) {
        self.init(deviceInfo: try DeviceInfo(contentsOfFile: path, interface: interface))
    }
}
