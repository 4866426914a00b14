#if canImport(Glibc)
import Glibc
#endif
import CVirtioShim
import Synchronization
import VirtioCore

/// A Linux TAP interface the back-end bridges a front-end to (``BackendMode/tap``): frames the
/// front-end transmits go to the kernel's network stack, and frames the kernel sends out of the
/// TAP arrive on the front-end's first receive queue.
///
/// Frames cross with their virtio-net header (IFF_VNET_HDR), so a front-end's checksum and
/// segmentation requests reach the kernel unchanged. In the other direction the kernel segments
/// large frames itself, and leaves checksums to the front-end only when it negotiated
/// GUEST_CSUM. Only /dev/net/tun is needed, not /dev/vhost-net.
package final class TapDevice: Sendable {
    /// The interface's name (what the kernel picked when none was asked for).
    let name: String
    let descriptor: OwnedDescriptor
    /// Set when the interface was deleted under us (EBADFD): it is no longer read or polled.
    let gone = Atomic<Bool>(false)

    /// Attaches to TAP `name`, creating it when it does not exist ("" lets the kernel pick one).
    /// The interface starts down and without addresses: configuring it is the administrator's
    /// part (`ip addr add …`, `ip link set … up`), as is moving it into a network namespace.
    init(name: String) throws(VirtioError) {
        var actual = [CChar](repeating: 0, count: Int(CVS_TAP_NAME_MAX) + 1)
        let (fd, code) = SystemCall.attempt { actual.withUnsafeMutableBufferPointer { cvs_tap_open(name, $0.baseAddress!) } }
        guard fd >= 0 else {
            throw VirtioError.system("Opening TAP '\(name)'", errno: code, hint: Self.hint(forOpening: name, errno: code))
        }
        descriptor = OwnedDescriptor(taking: fd)
        self.name = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Tells the kernel whether it may leave checksums to the front-end (one that negotiated
    /// GUEST_CSUM) in the frames it sends. Segmentation is never left to it: the kernel
    /// segments large TCP frames itself before they reach the TAP.
    func allowChecksumOffload(_ allowed: Bool) throws(VirtioError) {
        let bits = allowed ? UInt32(CVS_TAP_OFFLOAD_CSUM) : 0
        _ = try SystemCall.run("TUNSETOFFLOAD on TAP \(name)") { cvs_tap_set_offloads(descriptor.raw, bits) }
    }

    private static func hint(forOpening name: String, errno code: Int32) -> String {
        let shown = name.isEmpty ? "NAME" : name
        switch code {
        case ENOENT, ENODEV:
            return "/dev/net/tun is missing: load the tun module (modprobe tun), or in a container pass the device in (docker run --device /dev/net/tun)."
        case EPERM, EACCES:
            return "A TAP needs CAP_NET_ADMIN (run as root), unless it is a persistent TAP created for this user: ip tuntap add dev \(shown) mode tap vnet_hdr user USER."
        case EBUSY:
            return "Another process has '\(name)' open; a TAP serves one."
        case EINVAL:
            return "'\(name)' exists and is not a TAP, or is a multi-queue one."
        case ENAMETOOLONG:
            return "Interface names have at most \(CVS_TAP_NAME_MAX) characters."
        default:
            return ""
        }
    }
}
