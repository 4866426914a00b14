#!/usr/bin/env bash
# Every test. Without arguments: the whole XCTest suite (debug), the same suite again under
# AddressSanitizer and under ThreadSanitizer, each libFuzzer target for a short bounded time,
# a short soak, and the DocC documentation built with warnings as errors.
# With arguments, only the plain suite runs, and they go to `swift test`
# (for example: Scripts/test.sh --filter LoopbackIntegrityTests).
#
# Environment: FUZZ_SECONDS (per fuzz target, default 15), SOAK_SECONDS (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/setup.sh
# The interop tests drive dpdk-testpmd: they run in CI, never skip, so DPDK must be there.
./Scripts/install-dpdk.sh
# tshark reads our pcap captures back (PacketCaptureTests); ping and ip drive the TAP tests.
./Scripts/install-tools.sh
# QEMU, a guest kernel and busybox-static: QEMUGuestTests boot a Linux guest on our back-ends.
./Scripts/install-qemu.sh
# Open vSwitch with DPDK: OVSDPDKTests put our devices behind a private ovs-vswitchd.
./Scripts/install-ovs.sh
./Scripts/qemu-guest.sh image >/dev/null
# A sanitizer's report scrolls far above the end of a long run, and a CI log keeps only its
# tail: the run is kept in a file, and each report is printed again at the end with the test
# that was running when it came.
sanitized_suite() {
    local log status
    log=$(mktemp)
    set +e
    swift test --skip-build --sanitize="$1" --scratch-path ".build-${1:0:1}san" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    if grep -q "^WARNING: ThreadSanitizer\|^==[0-9]*==ERROR: AddressSanitizer" "$log"; then
        echo "== the $1 sanitizer's reports again, each after the test that was running" >&2
        awk '/^Test Case .* started/ { test = $0 }
             /^WARNING: ThreadSanitizer|^==[0-9]+==ERROR: AddressSanitizer/ { print "-- during: " test; on = 1 }
             on { print; if (++lines >= 60 || /^SUMMARY: /) { on = 0; lines = 0 } }' "$log" >&2
    fi
    rm -f "$log"
    return "$status"
}

swift build --build-tests
swift test --skip-build "$@"
[ "$#" -eq 0 ] || exit 0

echo "== the suite again under AddressSanitizer" >&2
swift build --build-tests --sanitize=address --scratch-path .build-asan
# Leak detection is off for this pass only: swift-corelibs-xctest leaks a weak-reference side
# table per test, and everything each test case holds is then reported as leaked from it (a
# test that only touches ring memory shows it too). Our resource leaks are checked by the
# fd/mapping tests and the soak; the fuzz targets run with leak detection on.
ASAN_OPTIONS=detect_leaks=0 sanitized_suite address

echo "== the suite again under ThreadSanitizer" >&2
swift build --build-tests --sanitize=thread --scratch-path .build-tsan
sanitized_suite thread

echo "== fuzzing" >&2
./Scripts/fuzz.sh "${FUZZ_SECONDS:-15}"

echo "== soak" >&2
./Scripts/soak.sh "${SOAK_SECONDS:-15}"

echo "== documentation (DocC)" >&2
./Scripts/docs.sh
