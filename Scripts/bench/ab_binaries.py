#!/usr/bin/env python3
"""Interleaved A/B of two front-end builds (benchmark, not a test): how a change was decided.

Runs A B A B ... (--pairs), 6 s each, with core-to-core latency read around every run, as
bench_vs_dpdk.py does, and prints each pair's two rates; compare only pairs whose four
latency readings agree. A and B are each a virtio-user-pmd binary with its own extra arguments,
in one quoted word (build one, copy it aside, build the other; or one binary with and without
a flag), or "dpdk" for testpmd's virtio-user.

  tx64 / rt64: against a fresh testpmd vhost (rxonly / macswap) on hugepages, read at the
               vhost side, as bench_vs_dpdk.py's cases of the same name;
  loop64:      each binary with its embedded loopback back-end (as Scripts/demo.sh runs it).

  python3 Scripts/bench/ab_binaries.py tx64 8 /tmp/pmd-before .build/release/virtio-user-pmd
  python3 Scripts/bench/ab_binaries.py loop64 6 /tmp/pmd-before .build/release/virtio-user-pmd
  python3 Scripts/bench/ab_binaries.py tx64 8 ".build/release/virtio-user-pmd --no-in-order" .build/release/virtio-user-pmd
  python3 Scripts/bench/ab_binaries.py tx64 8 dpdk .build/release/virtio-user-pmd

Needs root (it reserves hugepages for the run and puts the count back) and Scripts/setup.sh's
DPDK; see Docs/PERFORMANCE.md.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_vs_dpdk as bench  # noqa: E402

SECONDS = 6


def ours_against_vhost(command, case, socket):
    args = ["--forward-mode", "io", "--tx-first"] if case == "rt64" else ["--forward-mode", "txonly", "--pkt-size", "64"]
    subprocess.run(command[:1] + ["--socket", socket, "--cpu", "0", "--duration", str(SECONDS), "--stats-period", "0"] + args + command[1:],
                   check=True, capture_output=True)


def dpdk_against_vhost(case, socket):
    args = ["--forward-mode", "io", "--tx-first", "--txpkts", "64"] if case == "rt64" else ["--forward-mode", "txonly", "--txpkts", "64"]
    bench.run_testpmd_frontend(socket, args + ["--hugepages"], SECONDS)


def one_run(which, case, socket):
    command = shlex.split(which)
    if case == "loop64":
        out = subprocess.run(command[:1] + ["--cpu", "0", "--backend-cpu", "1", "--duration", str(SECONDS), "--stats-period", "1"] + command[1:],
                             check=True, capture_output=True, text=True).stdout
        return bench.steady([float(v) * 1e6 for v in re.findall(r"TX ([0-9.]+) Mpps", out)], 0.75)
    backend = bench.TestPMD("vhost", socket, ["--forward-mode", "macswap" if case == "rt64" else "rxonly", "--hugepages"])
    try:
        start = backend.offset()
        if which == "dpdk":
            dpdk_against_vhost(case, socket)
        else:
            ours_against_vhost(command, case, socket)
        return bench.steady(backend.rates(start, backend.offset(), "Rx-pps"), 0.75)
    finally:
        backend.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=["tx64", "rt64", "loop64"])
    parser.add_argument("pairs", type=int)
    parser.add_argument("a", help='"dpdk", or a virtio-user-pmd binary and its extra arguments in one word')
    parser.add_argument("b")
    opts = parser.parse_args()
    if opts.case == "loop64" and "dpdk" in (opts.a, opts.b):
        sys.exit("ab_binaries: loop64 compares two of our binaries; bench_vs_dpdk.py's loop64 has the DPDK pair")
    before = bench.reserve_hugepages(1024)
    socket = f"/tmp/ab-{os.getpid()}.sock"
    try:
        for i in range(opts.pairs):
            runs = []
            for which in (opts.a, opts.b):
                lat0 = bench.core_latency()
                rate, flat = one_run(which, opts.case, socket)
                lat1 = bench.core_latency()
                runs.append(f"{rate / 1e6:6.2f} Mpps (lat {lat0}/{lat1} ns{'' if flat else ', not flat'})")
            print(f"pair {i + 1}: A {runs[0]}   B {runs[1]}", flush=True)
    finally:
        bench.restore_hugepages(before)


if __name__ == "__main__":
    main()
