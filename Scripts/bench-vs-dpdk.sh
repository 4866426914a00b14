#!/usr/bin/env bash
# Benchmark (not a test): DPDK's virtio-user vs our virtio-user-pmd against the same testpmd vhost
# back-end, DPDK's vhost vs our Swift back-end under the same testpmd virtio-user, and the
# loopback pairs (testpmd virtio-user <-> testpmd vhost, our device <-> our back-end) —
# interleaved A B A B, core-to-core latency measured around every run. DPDK runs as deployed:
# on hugepages (1024 of 2 MiB are reserved for the run, then the count is put back; needs root).
# Prints a table of medians, each case's ratio, and a last line ratio_min=X. Takes 25 to 50
# minutes with defaults (a case short of 5 kept pairs runs more, up to twice --pairs).
#
#   Scripts/bench-vs-dpdk.sh [--pairs N] [--min-kept K] [--max-pairs M] [--seconds S] [--cases tx64,tx64h,tx64nh,tx1518,rx64,rt64,tx64p,rx64p,backend64,loop64,…]
#
# Run it on an otherwise idle machine; see Docs/PERFORMANCE.md for the method.
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/setup.sh
./Scripts/install-dpdk.sh
swift build -c release --product virtio-user-pmd >&2
swift build -c release --product vhost-user-backend >&2
swift build -c release --product vhost-user-switch >&2
swift build -c release --product virtio-bench >&2
python3 Scripts/bench/bench_vs_dpdk.py "$@"
# The hot path's allocation count, from the test that asserts it is zero.
swift build --build-tests >&2
swift test --skip-build --filter AllocationFreeHotPathTests/testDeviceBurstsAndBackendForwardingAllocateNothing 2>&1 \
  | grep -E "^allocations" || { echo "allocations: the allocation test failed" >&2; exit 1; }
