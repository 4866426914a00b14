import Foundation
import VirtioCore
import VhostUser
import VhostUserBackend
import XCTest

/// A back-end in tap mode whose TAP the test moved into a network namespace of its own, with
/// the kernel's end addressed 192.0.2.1/24 (TEST-NET-1: nothing can leave it) and up. The
/// namespace has IPv6 off unless `ipv6` (then the kernel adds its link-local address and sends
/// the usual solicitations and reports). The namespace and the back-end go at the end of the test (the TAP goes with the back-end).
struct TapInNamespace {
    let backend: VhostUserBackend
    let namespace: String
    let tap: String
}

func tapBackendInNamespace(
    _ testCase: XCTestCase, ipv6: Bool = false, adjust: (inout VhostUserBackend.Configuration) -> Void = { _ in }
) throws -> TapInNamespace {
    guard getuid() == 0 else { throw XCTSkip("a TAP and a network namespace need root; CI runs as root") }
    let suffix = String(UUID().uuidString.prefix(6)).lowercased()
    var configuration = VhostUserBackend.Configuration(socketPath: try makeSocketPath(testCase), mode: .tap)
    configuration.tapInterface = "usvt\(suffix)"
    adjust(&configuration)
    let backend = try VhostUserBackend(configuration: configuration)
    try backend.start()
    testCase.addTeardownBlock { backend.stop() }
    let tap = try XCTUnwrap(backend.tapInterfaceName)
    XCTAssertEqual(tap, configuration.tapInterface)
    let namespace = "usv-test-\(suffix)"
    try runIP(["netns", "add", namespace])
    testCase.addTeardownBlock { _ = try? runProgram("/usr/sbin/ip", ["netns", "del", namespace]) }
    // No IPv6 in the namespace: the kernel then sends only what a test asks for (no router
    // solicitations or MLD reports), so frame counts are exact.
    for scope in ["all", "default"] where !ipv6 {
        // A kernel without IPv6 has no such setting, and no IPv6 chatter either.
        _ = try? runIP(["netns", "exec", namespace, "sysctl", "-q", "-w", "net.ipv6.conf.\(scope).disable_ipv6=1"])
    }
    try runIP(["link", "set", tap, "netns", namespace])
    try runIP(["-n", namespace, "addr", "add", "192.0.2.1/24", "dev", tap])
    try runIP(["-n", namespace, "link", "set", tap, "up"])
    return TapInNamespace(backend: backend, namespace: namespace, tap: tap)
}

/// Runs `ip` (iproute2); throws with its message when it fails.
@discardableResult
func runIP(_ arguments: [String]) throws -> String {
    let result = try runProgram("/usr/sbin/ip", arguments)
    guard result.status == 0 else {
        throw TestFailure("ip \(arguments.joined(separator: " ")) failed: \(result.errors)")
    }
    return result.output
}
