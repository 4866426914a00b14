// swift-tools-version:6.0
// libFuzzer targets, built only by Scripts/fuzz.sh (-sanitize=fuzzer with AddressSanitizer).
import PackageDescription

let package = Package(
    name: "swift-virtio-user-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "swift-virtio-user", path: "..")],
    targets: [
        .target(name: "FuzzDriver", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "FuzzMessageDecoder",
            dependencies: ["FuzzDriver", .product(name: "VhostUserBackendFuzzing", package: "swift-virtio-user")],
            swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "FuzzForwarding",
            dependencies: ["FuzzDriver", .product(name: "VhostUserBackendFuzzing", package: "swift-virtio-user")],
            swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(
            name: "FuzzIPInput",
            dependencies: ["FuzzDriver", .product(name: "VirtioUserIPFuzzing", package: "swift-virtio-user")],
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
