// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "swift-virtio-user",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "VirtioUser", targets: ["VirtioUser"]),
        .library(name: "VhostUserBackend", targets: ["VhostUserBackend"]),
        // UDP and TCP for apps, over VirtioUserDevice: lwIP's stack (Debian's liblwip-dev).
        .library(name: "VirtioUserIP", targets: ["VirtioUserIP"]),
        // swift-nio pipelines (NIOHTTP1's handlers, say) over VirtioUserIP's TCP connections.
        .library(name: "VirtioUserIPNIO", targets: ["VirtioUserIPNIO"]),
        // VirtioUserIP's input path over arbitrary frames, for Fuzz/ and the tests: not API.
        .library(name: "VirtioUserIPFuzzing", targets: ["VirtioUserIPFuzzing"]),
        // The back-end's data path over arbitrary memory, for Fuzz/ and the tests: not API.
        .library(name: "VhostUserBackendFuzzing", targets: ["VhostUserBackendFuzzing"]),
        .executable(name: "virtio-user-pmd", targets: ["virtio-user-pmd"]),
        .executable(name: "vhost-user-backend", targets: ["vhost-user-backend"]),
        .executable(name: "vhost-user-switch", targets: ["vhost-user-switch"]),
        .executable(name: "virtio-bench", targets: ["virtio-bench"]),
        .executable(name: "ping-responder", targets: ["ping-responder"]),
        .executable(name: "http-hello", targets: ["http-hello"]),
        .executable(name: "udp-echo", targets: ["udp-echo"]),
        .executable(name: "nio-http-hello", targets: ["nio-http-hello"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        // Errno: the errno a failed system call left, typed, in VirtioError.
        .package(url: "https://github.com/apple/swift-system", from: "1.4.0"),
        // VirtioUserIPNIO: NIOCore's Channel; the tests and an example use NIOPosix and NIOHTTP1.
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        // `swift package generate-documentation` (Scripts/docs.sh); no code depends on it.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // C: ring layouts, ordered index access, memfd/hugetlbfs, eventfd, SCM_RIGHTS, libnuma.
        .target(
            name: "CVirtioShim",
            path: "CVirtioShim",
            linkerSettings: [.linkedLibrary("numa")]
        ),
        // Shared by both sides: system calls, shared memory, split-ring halves.
        .target(
            name: "VirtioCore",
            dependencies: [
                "CVirtioShim", .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        // vhost-user wire types, framed channel with fd passing, frontend session.
        .target(
            name: "VhostUser",
            dependencies: ["VirtioCore", "CVirtioShim", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        // The driver side: VirtioUserDevice.
        .target(
            name: "VirtioUser",
            dependencies: [
                "VirtioCore", "VhostUser", "CVirtioShim", .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"), .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // lwIP 2.1 as Debian builds it (liblwip-dev): its raw API and a few inline wrappers.
        .systemLibrary(
            name: "CLwIP",
            path: "Sources/CLwIP",
            pkgConfig: "lwip",
            providers: [.apt(["liblwip-dev"])]
        ),
        // IP for apps: an lwIP interface on a device queue pair, TCP and UDP as async sequences.
        .target(
            name: "VirtioUserIP",
            dependencies: ["VirtioUser", "VirtioCore", "CLwIP"],
            swiftSettings: strict
        ),
        .target(
            name: "VirtioUserIPNIO",
            dependencies: ["VirtioUserIP", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "VirtioUserIPFuzzing",
            dependencies: ["VirtioUserIP", "VirtioCore", "CLwIP"],
            swiftSettings: strict
        ),
        // The device side: a vhost-user backend (loopback, sink).
        .target(
            name: "VhostUserBackend",
            dependencies: [
                "VirtioCore", "VhostUser", "CVirtioShim", .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"), .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "VhostUserBackendFuzzing",
            dependencies: ["VhostUserBackend", "VirtioCore", "VhostUser", "CVirtioShim"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "virtio-user-pmd",
            dependencies: [
                "VirtioUser", "VhostUserBackend",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "vhost-user-backend",
            dependencies: [
                "VhostUserBackend",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "vhost-user-switch",
            dependencies: [
                "VhostUserBackend",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Benchmark helpers: core-to-core latency for Scripts/bench-vs-dpdk.sh, interrupt mode, the IP sink.
        .executableTarget(
            name: "virtio-bench",
            dependencies: [
                "VirtioCore", "VirtioUser", "VhostUserBackend", "VirtioUserIP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // Example app: an ARP and ping responder on VirtioUserDevice (see the README's TAP example).
        .executableTarget(
            name: "ping-responder",
            dependencies: [
                "VirtioUser",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/Examples/PingResponder",
            swiftSettings: strict
        ),
        // Example apps on VirtioUserIP: an HTTP/1.1 "hello" server and a UDP echo.
        .executableTarget(
            name: "http-hello",
            dependencies: ["VirtioUserIP"],
            path: "Sources/Examples/HTTPHello",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "udp-echo",
            dependencies: ["VirtioUserIP"],
            path: "Sources/Examples/UDPEcho",
            swiftSettings: strict
        ),
        // The same HTTP server as NIOHTTP1's handlers in a pipeline over VirtioUserIPNIO.
        .executableTarget(
            name: "nio-http-hello",
            dependencies: [
                "VirtioUserIP", "VirtioUserIPNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/Examples/NIOHTTPHello",
            swiftSettings: strict
        ),
        // Counts heap allocations per thread so tests can prove the hot path allocates nothing.
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        .testTarget(
            name: "VirtioCoreTests",
            dependencies: ["VirtioCore", "CVirtioShim", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict),
        .testTarget(
            name: "VhostUserTests",
            dependencies: ["VhostUser", "VirtioCore", "CVirtioShim", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict),
        .testTarget(
            name: "VirtioUserTests",
            dependencies: [
                "VirtioUser", "VhostUserBackend", "VhostUserBackendFuzzing", "VirtioCore", "VhostUser", "CAllocationCounter",
                .product(name: "SystemPackage", package: "swift-system"),
                "VirtioUserIP", "VirtioUserIPFuzzing", "virtio-user-pmd", "vhost-user-backend", "vhost-user-switch", "ping-responder", "http-hello", "udp-echo",
                "VirtioUserIPNIO", "nio-http-hello",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
    ]
)
