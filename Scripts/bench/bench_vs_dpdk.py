#!/usr/bin/env python3
"""Interleaved A/B benchmark: DPDK's virtio-user (A) vs our virtio-user-pmd (B) against the same
dpdk-testpmd vhost back-end, and DPDK's vhost (A) vs our Swift back-end (B) under the same
dpdk-testpmd virtio-user front-end. Called by Scripts/bench-vs-dpdk.sh; see Docs/PERFORMANCE.md.

DPDK runs as it is deployed: testpmd's vhost and virtio-user on hugepages (--in-memory
--single-file-segments), virtio-user with its default devargs (in_order=1, mrg_rxbuf=1). Ours
runs with its defaults (a sealed memfd) and, in the cases ending in "h", on hugepages. Cases
ending in "nh" put every DPDK side on --no-huge memory instead (the old comparison, for context).

Method (this 2-vCPU VM flips, every few seconds to minutes, between a "near" and a "far" vCPU
placement; ring throughput moves up to 3x with it, for DPDK and for us alike):
- runs alternate A B A B ... (--pairs pairs per case), each --seconds long;
- core-to-core latency is measured before and after every run, and the per-second rates of each
  run must be flat (slowest second >= --flat x the fastest): a flip in the middle of a run shows
  up there, since latency cannot be read while both CPUs poll;
- a pair is kept only if both runs are flat and all four latency readings fall in one placement
  class (near < --near-ns <= far), none 1.5x another;
- a run's rate is the median of the per-second rates testpmd printed during it (first and last
  second dropped), always read on the same side for A and B;
- a case runs --pairs pairs, then more (up to --max-pairs) until --min-kept pairs are kept, so
  that its ratio does not rest on one pair when the placement lets more through;
- the table gives medians (and min/max) over kept pairs per placement; a case's ratio is the
  median of all its kept pairs' own ours/DPDK ratios, near and far together (each pair is
  compared within its own placement), so a pair split by a placement flip the checks missed
  moves it little; ratio_min is the lowest case ratio.
"""
import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTPMD_SH = os.path.join(ROOT, "Scripts", "testpmd.sh")
BIN = os.path.join(ROOT, ".build", "release")


def core_latency():
    out = subprocess.run([os.path.join(BIN, "virtio-bench"), "core-latency", "--samples", "5"],
                         capture_output=True, text=True, check=True).stdout
    return int(re.search(r"core-latency-ns (\d+)", out).group(1))


class TestPMD:
    """One dpdk-testpmd through Scripts/testpmd.sh."""

    counter = 0

    def __init__(self, role, socket, args):
        TestPMD.counter += 1
        self.prefix = f"bench{os.getpid()}x{TestPMD.counter}"
        self.pidfile = f"/tmp/testpmd-{self.prefix}.pid"
        self.log = f"/tmp/testpmd-{self.prefix}.log"
        subprocess.run([TESTPMD_SH, role, "--socket", socket, "--prefix", self.prefix,
                        "--pidfile", self.pidfile, "--log", self.log] + args,
                       check=True, capture_output=True, text=True)

    def offset(self):
        return os.path.getsize(self.log)

    def rates(self, start, end, key):
        """Per-second `key` (Rx-pps or Tx-pps) values printed between two log offsets."""
        with open(self.log, "rb") as f:
            f.seek(start)
            text = f.read(end - start).decode(errors="replace")
        return [int(v) for v in re.findall(key + r":\s+(\d+)", text)]

    def stop(self):
        subprocess.run([TESTPMD_SH, "stop", "--pidfile", self.pidfile], capture_output=True)
        try:
            os.remove(self.log)
        except OSError:
            pass


def steady(values, flat):
    """Median of per-second rates without the partial seconds at either end, and whether the run held one
    speed (its slowest second at least `flat` times its fastest)."""
    # Intervals before the front-end started or after it stopped read zero; the first and last
    # non-zero ones are partial (testpmd's stats clock is not aligned with the run, and it
    # sometimes skips a tick, so an interval can span two seconds).
    moving = [v for v in values if v > 0]
    core = moving[1:-1]
    if not core:
        return (statistics.median(moving) if moving else 0), False
    return statistics.median(core), min(core) >= flat * max(core)


def reserve_hugepages(pages):
    """At least `pages` 2 MiB hugepages; returns the count before, to restore it."""
    knob = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    with open(knob) as f:
        before = int(f.read())
    subprocess.run([os.path.join(ROOT, "Scripts", "hugepages.sh"), str(pages)], check=True, capture_output=True)
    return before


def restore_hugepages(count):
    with open("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "w") as f:
        f.write(str(count))


def run_ours(socket, args, seconds):
    cmd = [os.path.join(BIN, "virtio-user-pmd"), "--socket", socket, "--cpu", "0",
           "--duration", str(seconds), "--stats-period", "0"] + args
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def run_testpmd_frontend(socket, args, seconds):
    pmd = TestPMD("virtio-user", socket, args)
    time.sleep(seconds)
    pmd.stop()


def ours_loopback(extra, seconds, flat):
    """Our device and its embedded loopback back-end (as Scripts/demo.sh runs them), device on
    CPU 0, back-end on CPU 1: the device's per-second TX rates, steadied."""
    out = subprocess.run([os.path.join(BIN, "virtio-user-pmd"), "--cpu", "0", "--backend-cpu", "1",
                          "--duration", str(seconds), "--stats-period", "1"] + extra,
                         check=True, capture_output=True, text=True).stdout
    return steady([float(v) * 1e6 for v in re.findall(r"TX ([0-9.]+) Mpps", out)], flat)


def pair_numbers(pairs, opts):
    """0, 1, ... for a compared case: --pairs of them, then more while fewer than --min-kept of
    the pairs run so far passed the placement checks, up to --max-pairs."""
    i = 0
    while i < opts.pairs or (i < opts.max_pairs and sum(consistent(p, opts.near_ns) for p in pairs) < opts.min_kept):
        yield i
        i += 1


def print_pair(i, a_name, b_name, pair):
    print(f"   pair {i + 1}: {a_name} {pair['A'][0] / 1e6:.2f} Mpps (lat {pair['A'][1]}/{pair['A'][2]} ns{mark(pair['A'])})"
          f"  {b_name} {pair['B'][0] / 1e6:.2f} Mpps (lat {pair['B'][1]}/{pair['B'][2]} ns{mark(pair['B'])})", flush=True)


def start_our_backend(socket, mode):
    proc = subprocess.Popen([os.path.join(BIN, "vhost-user-backend"), "--socket", socket,
                             "--mode", mode, "--cpu", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists(socket):
            return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("our back-end did not listen")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--min-kept", type=int, default=5,
                        help="kept pairs a compared case needs before it stops (see --max-pairs)")
    parser.add_argument("--max-pairs", type=int,
                        help="most pairs a case runs while short of --min-kept (default: 2 x --pairs)")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--near-ns", type=int, default=150,
                        help="one-way core-to-core ns below which a placement counts as near")
    parser.add_argument("--flat", type=float, default=0.75,
                        help="a run counts as flat when its slowest second is at least this x its fastest")
    parser.add_argument("--report-from", metavar="LOG",
                        help="print the table again from a run's printed pair lines (a run that stopped early)")
    parser.add_argument("--cases", default="tx64,tx64h,tx64nh,tx1518,rx64,rt64,tx64p,rx64p,backend64,loop64,tx64q2,switch64")
    opts = parser.parse_args()
    if opts.report_from:
        report_from_log(opts.report_from, opts)
        return
    if opts.pairs < 1 or opts.seconds < 4:
        sys.exit("bench: need --pairs >= 1 and --seconds >= 4")
    if opts.max_pairs is None:
        opts.max_pairs = 2 * opts.pairs
    if opts.max_pairs < opts.pairs or opts.min_kept < 1:
        sys.exit("bench: need --max-pairs >= --pairs and --min-kept >= 1")

    cases = {
        # name: (label, frame bytes)
        "tx64": ("txonly 64 B -> vhost rxonly", 64),
        "tx64h": ("txonly 64 B -> vhost rxonly, ours on hugepages too", 64),
        "tx64nh": ("txonly 64 B -> vhost rxonly, DPDK on --no-huge (old comparison)", 64),
        "tx1518": ("txonly 1518 B -> vhost rxonly", 1518),
        "rx64": ("vhost txonly 64 B -> rxonly", 64),
        "rt64": ("io --tx-first <-> vhost macswap, 64 B", 64),
        "backend64": ("testpmd txonly 64 B -> back-end (rxonly | our sink)", 64),
        # The main job: a front-end and a back-end on one machine passing frames. DPDK: testpmd
        # virtio-user io <-> testpmd vhost io (both --tx-first), read at the vhost side; ours:
        # virtio-user-pmd with its embedded loopback back-end, as Scripts/demo.sh runs it.
        "loop64": ("loopback pair 64 B: DPDK virtio-user io <-> vhost io | our device <-> our back-end", 64),
        "ours64": ("our device <-> our back-end, loopback 64 B", 64),
        # Two queue pairs; each front-end forwards with one thread on one CPU polling both
        # (DPDK: one lcore; ours: --threads 1), the back-end on the other CPU.
        "tx64q2": ("txonly 64 B on 2 queue pairs -> vhost rxonly queues=2", 64),
        "ours64q2": ("our device <-> our back-end, loopback 64 B, 2 queue pairs", 64),
        # Packed virtqueues (DPDK: packed_vq=1; ours: --packed); the back-ends serve them.
        "tx64p": ("txonly 64 B -> vhost rxonly, packed rings", 64),
        "rx64p": ("vhost txonly 64 B -> rxonly, packed rings", 64),
        "rt64p": ("io --tx-first <-> vhost macswap, 64 B, packed rings", 64),
        "backend64p": ("testpmd txonly 64 B, packed rings -> back-end (rxonly | our sink)", 64),
        "ours64p": ("our device <-> our back-end, loopback 64 B, packed rings", 64),
        # Two of our device processes through vhost-user-switch (ours only): A txonly to B's
        # MAC, B echoes (macswap) in interrupt mode (--rx-wait 1: three threads on 2 vCPUs, A
        # and B sharing CPU 0, the switch on CPU 1); the rate is what B receives (the switch
        # carries as much again back to A).
        "switch64": ("our device -> vhost-user-switch -> our device (echo), 64 B", 64),
    }
    selected = [c for c in opts.cases.split(",") if c]
    for c in selected:
        if c not in cases:
            sys.exit(f"bench: unknown case {c}; known: {','.join(cases)}")

    # DPDK's sides (and ours in the "h" cases) on hugepages: enough for two testpmds' pools
    # and our region, given back afterwards.
    before = reserve_hugepages(1024)
    try:
        results = {}
        for case in selected:
            label, frame = cases[case]
            print(f"== {case}: {label}", flush=True)
            try:
                results[case] = run_case(case, frame, opts)
            except (OSError, subprocess.SubprocessError) as error:
                # One case that cannot run costs its row, not the table of the others.
                print(f"   {case} failed: {error}", flush=True)
                results[case] = []
    finally:
        restore_hugepages(before)
    report(results, cases, opts)


def run_case(case, frame, opts):
    """One dict per pair: {"A": (pps, latency before, after), "B": (...)}; ours64 has only B."""
    sock = f"/tmp/bench-{os.getpid()}-{case}.sock"
    pairs = []
    # A packed case runs its split twin with packed rings asked for on the front-ends.
    packed = case in ("tx64p", "rx64p", "rt64p", "backend64p", "ours64p", "loop64p")
    dpdk_packed = ["--devargs", "packed_vq=1"] if packed else []
    ours_packed = ["--packed"] if packed else []
    if packed:
        case = case[:-1]
    # DPDK as deployed (hugepages), unless the case asks for the old --no-huge comparison.
    dpdk_memory = [] if case.endswith("nh") else ["--hugepages"]
    ours_memory = ["--hugepages"] if case.endswith("h") and not case.endswith("nh") else []
    case = case[:-2] if case.endswith("nh") else (case[:-1] if ours_memory else case)
    if case in ("tx64", "tx1518", "rx64", "rt64", "tx64q2"):
        backend_mode = {"rt64": "macswap", "rx64": "txonly"}.get(case, "rxonly")
        # What the back-end counts: frames it received, or (rx) frames it got into the ring.
        backend_key = "Tx-pps" if case == "rx64" else "Rx-pps"
        backend_args = list(dpdk_memory)
        if case == "rt64":
            a_args = ["--forward-mode", "io", "--tx-first", "--txpkts", str(frame)]
            b_args = ["--forward-mode", "io", "--tx-first"]
        elif case == "rx64":
            a_args = ["--forward-mode", "rxonly"]
            b_args = ["--forward-mode", "rxonly"]
            backend_args += ["--txpkts", str(frame)]
        else:
            a_args = ["--forward-mode", "txonly", "--txpkts", str(frame)]
            b_args = ["--forward-mode", "txonly", "--pkt-size", str(frame)]
        a_args += dpdk_packed + dpdk_memory
        b_args += ours_packed + ours_memory
        if case == "tx64q2":
            a_args += ["--queues", "2"]
            b_args += ["--queues", "2", "--threads", "1"]  # one thread on CPU 0 polls both pairs
            backend_args = ["--queues", "2"]
        for i in pair_numbers(pairs, opts):
            pair = {}
            for which in ("A", "B"):
                # Latency is read with nothing else running: a polling testpmd on a CPU would
                # make the ping-pong measure contention, not placement. So each run gets a
                # fresh back-end, started after the first reading and stopped before the second.
                lat0 = core_latency()
                backend = TestPMD("vhost", sock, ["--forward-mode", backend_mode] + backend_args)
                try:
                    start = backend.offset()
                    if which == "A":
                        run_testpmd_frontend(sock, a_args, opts.seconds)
                    else:
                        run_ours(sock, b_args, opts.seconds)
                    end = backend.offset()
                    rate, flat = steady(backend.rates(start, end, backend_key), opts.flat)
                finally:
                    backend.stop()
                lat1 = core_latency()
                pair[which] = (rate, lat0, lat1, flat)
            print_pair(i, "DPDK", "ours", pair)
            pairs.append(pair)
    elif case == "backend64":
        for i in pair_numbers(pairs, opts):
            pair = {}
            for which in ("A", "B"):
                lat0 = core_latency()
                if which == "A":
                    backend = TestPMD("vhost", sock, ["--forward-mode", "rxonly"] + dpdk_memory)
                else:
                    backend = start_our_backend(sock, "sink")
                try:
                    front = TestPMD("virtio-user", sock, ["--forward-mode", "txonly", "--txpkts", str(frame)] + dpdk_packed + dpdk_memory)
                    start = front.offset()
                    time.sleep(opts.seconds)
                    end = front.offset()
                    rate, flat = steady(front.rates(start, end, "Tx-pps"), opts.flat)
                    front.stop()
                finally:
                    if which == "A":
                        backend.stop()
                    else:
                        backend.send_signal(signal.SIGTERM)
                        backend.wait(timeout=10)
                lat1 = core_latency()
                pair[which] = (rate, lat0, lat1, flat)
            print_pair(i, "DPDK vhost", "our back-end", pair)
            pairs.append(pair)
    elif case == "loop64":
        for i in pair_numbers(pairs, opts):
            pair = {}
            for which in ("A", "B"):
                lat0 = core_latency()
                if which == "A":
                    backend = TestPMD("vhost", sock, ["--forward-mode", "io", "--tx-first"] + dpdk_memory)
                    try:
                        front = TestPMD("virtio-user", sock, ["--forward-mode", "io", "--tx-first", "--txpkts", str(frame)] + dpdk_packed + dpdk_memory)
                        start = backend.offset()
                        time.sleep(opts.seconds)
                        end = backend.offset()
                        rate, flat = steady(backend.rates(start, end, "Rx-pps"), opts.flat)
                        front.stop()
                    finally:
                        backend.stop()
                else:
                    rate, flat = ours_loopback(ours_packed + ours_memory, opts.seconds, opts.flat)
                lat1 = core_latency()
                pair[which] = (rate, lat0, lat1, flat)
            print_pair(i, "DPDK pair", "ours", pair)
            pairs.append(pair)
    elif case in ("ours64", "ours64q2"):
        extra = (["--queues", "2", "--threads", "1"] if case == "ours64q2" else []) + ours_packed + ours_memory
        for i in range(opts.pairs):
            lat0 = core_latency()
            rate, flat = ours_loopback(extra, opts.seconds, opts.flat)
            lat1 = core_latency()
            print(f"   run {i + 1}: ours<->ours {rate / 1e6:.2f} Mpps (lat {lat0}/{lat1} ns{mark((rate, lat0, lat1, flat))})", flush=True)
            pairs.append({"B": (rate, lat0, lat1, flat)})
    elif case == "switch64":
        for i in range(opts.pairs):
            lat0 = core_latency()
            rate, flat = run_switch(sock, opts.seconds, frame)
            lat1 = core_latency()
            print(f"   run {i + 1}: ours->switch->ours {rate / 1e6:.2f} Mpps (lat {lat0}/{lat1} ns{mark((rate, lat0, lat1, flat))})", flush=True)
            pairs.append({"B": (rate, lat0, lat1, flat)})
    return pairs


def run_switch(sock, seconds, frame):
    """A txonly -> switch -> B macswap (interrupt mode) -> switch -> A; B's per-second RX rates."""
    ports = [sock + ".a", sock + ".b"]
    switch = subprocess.Popen([os.path.join(BIN, "vhost-user-switch"), "--port", ports[0], "--port", ports[1], "--cpu", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if all(os.path.exists(p) for p in ports):
                break
            time.sleep(0.05)
        receiver = subprocess.Popen([os.path.join(BIN, "virtio-user-pmd"), "--socket", ports[1], "--forward-mode", "macswap", "--rx-wait", "1",
                                     "--mac", "02:00:00:00:00:0b", "--cpu", "0", "--duration", str(seconds + 2), "--stats-period", "1"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(1)
        subprocess.run([os.path.join(BIN, "virtio-user-pmd"), "--socket", ports[0], "--forward-mode", "txonly",
                        "--peer-mac", "02:00:00:00:00:0b", "--pkt-size", str(frame), "--cpu", "0",
                        "--duration", str(seconds), "--stats-period", "0"],
                       check=True, capture_output=True)
        out = receiver.communicate(timeout=seconds + 30)[0]
        # B's lines while A ran: drop B's first (A not started) and the tail (A stopped).
        per_second = [float(v) * 1e6 for v in re.findall(r"RX ([0-9.]+) Mpps", out)]
        busy = [r for r in per_second if r > 0]
        return steady(busy, 0.75) if busy else (0.0, False)
    finally:
        switch.send_signal(signal.SIGTERM)
        switch.wait(timeout=10)


def mark(run):
    return "" if run[3] else ", not flat"


def placement(lat, near_ns):
    return "near" if lat < near_ns else "far"


def consistent(pair, near_ns):
    """Every run flat, all four latency readings in one placement class, none 1.5x another."""
    lats = [v for run in pair.values() for v in run[1:3]]
    return (all(run[3] for run in pair.values())
            and len({placement(l, near_ns) for l in lats}) == 1 and max(lats) <= 1.5 * min(lats))


def row(case, where, pairs, frame):
    b = [p["B"][0] for p in pairs]
    gbps = lambda pps: pps * frame * 8 / 1e9
    mb = statistics.median(b)
    if "A" not in pairs[0]:
        print(f"{case:<10} {where:<9} {len(pairs):>5} {'-':>22} {mb / 1e6:>8.2f} ({min(b) / 1e6:.2f}-{max(b) / 1e6:.2f}) "
              f"{'-':>9} {gbps(mb):>9.2f} {'-':>6}")
        return None
    a = [p["A"][0] for p in pairs]
    ma = statistics.median(a)
    ratio = statistics.median([p["B"][0] / p["A"][0] if p["A"][0] else 0.0 for p in pairs])
    print(f"{case:<10} {where:<9} {len(pairs):>5} {ma / 1e6:>8.2f} ({min(a) / 1e6:.2f}-{max(a) / 1e6:.2f}) "
          f"{mb / 1e6:>8.2f} ({min(b) / 1e6:.2f}-{max(b) / 1e6:.2f}) {gbps(ma):>9.2f} {gbps(mb):>9.2f} {ratio:>6.2f}")
    return ratio


def report(results, cases, opts):
    """Medians per case and placement over the pairs whose placement held; an "all" row
    (every pair, unfiltered) for context, which ratio_min does not use."""
    print()
    print(f"{'case':<10} {'placement':<9} {'pairs':>5} {'DPDK Mpps (min-max)':>22} {'ours Mpps (min-max)':>22} "
          f"{'DPDK Gb/s':>9} {'ours Gb/s':>9} {'ratio':>6}")
    ratios = {}
    missing = []
    for case, pairs in results.items():
        frame = cases[case][1]
        if not pairs:
            print(f"{case:<10} failed")
            missing.append(case)
            continue
        for where in ("near", "far"):
            kept = [p for p in pairs if consistent(p, opts.near_ns)
                    and placement(next(iter(p.values()))[1], opts.near_ns) == where]
            if kept:
                row(case, where, kept, frame)
        row(case, "all", pairs, frame)
        kept = [p for p in pairs if consistent(p, opts.near_ns)]
        if "A" in pairs[0]:
            if kept:
                ratios[case] = (statistics.median(p["B"][0] / p["A"][0] if p["A"][0] else 0.0 for p in kept), len(kept))
            else:
                missing.append(case)
    print()
    print("ours/DPDK per case: the median of every kept pair's ratio, near and far together;")
    print("for context, each side's fastest flat run of the case and their ratio (not in ratio_min)")
    for case, (ratio, count) in ratios.items():
        best = [max((p[side][0] for p in results[case] if p[side][3]), default=0.0) for side in ("A", "B")]
        context = f"best runs: DPDK {best[0] / 1e6:.2f}, ours {best[1] / 1e6:.2f} Mpps, {best[1] / best[0]:.2f}" if best[0] else ""
        print(f"  {case:<10} {ratio:5.2f}  ({count} kept pair{'s' if count != 1 else ''})  {context}")
    print()
    note = f" (no pair kept for: {','.join(missing)})" if missing else ""
    print("ratio_min=" + (f"{min(r for r, _ in ratios.values()):.2f}" if ratios else "n/a") + note)


def report_from_log(path, opts):
    """The table of a run, from the "== case" and "pair N" lines it printed, with report()'s rules."""
    side = r"([0-9.]+) Mpps \(lat (\d+)/(\d+) ns(, not flat)?\)"
    results, frames, case = {}, {}, None
    with open(path) as f:
        for line in f:
            m = re.match(r"== (\w+): .*?(\d+) B", line)
            if m:
                case = m.group(1)
                results[case], frames[case] = [], int(m.group(2))
                continue
            m = re.match(r"\s+pair \d+: .*?" + side + r"\s+.*?" + side, line)
            if m and case:
                g = m.groups()
                results[case].append({"A": (float(g[0]) * 1e6, int(g[1]), int(g[2]), g[3] is None),
                                      "B": (float(g[4]) * 1e6, int(g[5]), int(g[6]), g[7] is None)})
    report({c: r for c, r in results.items() if r}, {c: ("", frames[c]) for c in results}, opts)


if __name__ == "__main__":
    main()
