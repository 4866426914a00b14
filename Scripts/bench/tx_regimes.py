#!/usr/bin/env python3
"""Per-second view of our transmit against testpmd's vhost (benchmark, not a test): which side
waits in each second. Each run starts a fresh testpmd vhost rxonly on hugepages, runs
virtio-user-pmd txonly 64 B on CPU 0 with --stats-period 1, and prints, per second, the
transmit rate and how many frames the full ring turned away (none: the back-end was waiting
on us), with the ticks stolen by the hypervisor. Core-to-core latency is read before and
after each run, as bench_vs_dpdk.py does.

  python3 Scripts/bench/tx_regimes.py RUNS [extra virtio-user-pmd arguments, e.g. --hugepages]

Needs root (hugepages) and a release build of virtio-user-pmd and virtio-bench; see
Docs/PERFORMANCE.md ("With five kept pairs a case").
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_vs_dpdk as bench  # noqa: E402

SECONDS = 5


def steal_ticks():
    """Ticks the hypervisor ran something else on our two vCPUs (/proc/stat's steal column)."""
    with open("/proc/stat") as f:
        return sum(int(line.split()[8]) for line in f if line.startswith(("cpu0 ", "cpu1 ")))


def main():
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    before = bench.reserve_hugepages(1024)
    socket = f"/tmp/tx-regimes-{os.getpid()}.sock"
    try:
        for run in range(int(sys.argv[1])):
            lat0 = bench.core_latency()
            steal0 = steal_ticks()
            backend = bench.TestPMD("vhost", socket, ["--forward-mode", "rxonly", "--hugepages"])
            try:
                out = subprocess.run(
                    [os.path.join(bench.BIN, "virtio-user-pmd"), "--socket", socket, "--cpu", "0",
                     "--duration", str(SECONDS), "--stats-period", "1", "--forward-mode", "txonly",
                     "--pkt-size", "64"] + sys.argv[2:],
                    check=True, capture_output=True, text=True).stdout
            finally:
                backend.stop()
            steal = steal_ticks() - steal0
            lat1 = bench.core_latency()
            seconds, previous = [], 0
            # The stats line's ring-full count is cumulative.
            for m in re.finditer(r"TX ([0-9.]+) Mpps.*?ring-full=(\d+)", out):
                full = int(m.group(2))
                seconds.append(f"{float(m.group(1)):5.1f} Mpps, {(full - previous) / 1e6:4.1f} M turned away")
                previous = full
            print(f"run {run + 1} (lat {lat0}/{lat1} ns, steal {steal} ticks): " + " | ".join(seconds), flush=True)
    finally:
        bench.restore_hugepages(before)


if __name__ == "__main__":
    main()
