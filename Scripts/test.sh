#!/usr/bin/env bash
# Every test: builds the package and its tests (debug), then runs the whole XCTest suite.
# Extra arguments go to `swift test` (for example --filter LoopbackIntegrityTests).
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/setup.sh
# The interop tests drive dpdk-testpmd: they run in CI, never skip, so DPDK must be there.
./Scripts/install-dpdk.sh
swift build --build-tests
swift test --skip-build "$@"
