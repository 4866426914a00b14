#!/usr/bin/env bash
# Instructions per packet, counted by valgrind's callgrind (repeatable where time is not):
# our virtio-user-pmd and DPDK's testpmd virtio-user, each as the front-end of the same testpmd
# vhost back-end, counting only inside the forwarding function:
#   TX: front-end txonly 64 B  -> testpmd vhost rxonly
#   RX: front-end rxonly       <- testpmd vhost txonly 64 B
# Under valgrind the front-end runs ~50x slower than the native back-end, so its rings are
# always full (TX) or always fed (RX): the count is the cost of moving packets, not of waiting.
# Each front-end runs twice, for 1 and for 1+2S seconds of traffic, and the whole process is
# counted: instructions per packet = (Ir long - Ir short) / (packets long - packets short), which
# cancels start-up and teardown without needing symbols (Debian's testpmd is stripped).
#
#   Scripts/callgrind-ipp.sh [S] [--ours "FLAGS"] [--devargs A] [--backend] [--cache]
#     S               seconds (default 3)
#     --cache         simulate the caches too (--cache-sim=yes): D1 and last-level misses per
#                     packet beside the instructions. Each process is simulated alone, so a
#                     line the other side wrote is not a miss here: these are the misses of
#                     our own working set, not of the lines the two sides pass between them.
#     --backend       count our back-end (vhost-user-backend) instead, with testpmd's
#                     virtio-user as the native front-end: sink <- testpmd txonly 64 B, and
#                     loopback <-> testpmd flowgen 64 B (it sends, and takes back what we return).
#                     Packets are the frames the back-end took from the transmit ring.
#     --ours FLAGS    extra virtio-user-pmd flags for our runs, e.g. "--packed" or
#                     "--in-order --event-idx"
#     --devargs A     extra virtio_user devargs for DPDK's runs, e.g. packed_vq=1
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=3 ours_flags="" devargs="" measure_backend=0 cache_sim=no
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) measure_backend=1; shift ;;
    --cache) cache_sim=yes; shift ;;
    --ours) ours_flags=$2; shift 2 ;;
    --devargs) devargs=",$2"; shift 2 ;;
    [0-9]*) seconds=$1; shift ;;
    *) echo "callgrind-ipp: unknown argument $1 (usage: callgrind-ipp.sh [S] [--ours FLAGS] [--devargs A] [--backend] [--cache])" >&2; exit 2 ;;
  esac
done
source Scripts/setup.sh
./Scripts/install-dpdk.sh
command -v valgrind >/dev/null || { apt-get install -y -qq valgrind >/dev/null; }
swift build -c release --product virtio-user-pmd >&2
swift build -c release --product vhost-user-backend >&2

work=$(mktemp -d /tmp/callgrind-ipp.XXXXXX)
trap 'for p in "$work"/*.pid; do [ -f "$p" ] && Scripts/testpmd.sh kill --pidfile "$p"; done; rm -rf "$work"' EXIT
# valgrind 3.19 cannot read the DWARF 5 that Swift emits: count on a copy without debug info.
objcopy --strip-debug .build/release/virtio-user-pmd "$work/pmd"
objcopy --strip-debug .build/release/vhost-user-backend "$work/backend"

ir_of() {  # the process's total Ir (and with --cache, D1 and LL misses), from a callgrind output file
  callgrind_annotate "$1" 2>/dev/null | awk -v cache="$cache_sim" '/PROGRAM TOTALS/ {
    gsub(",", ""); gsub(/\([0-9.]+%\)/, "")
    # Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
    if (cache == "yes") print $1, $5 + $6, $8 + $9; else print $1
    exit }'
}

backend() {  # start a testpmd vhost back-end in mode $1 on $work/sock
  rm -f "$work/sock"
  Scripts/testpmd.sh vhost --socket "$work/sock" --prefix "cgb$$" --forward-mode "$1" \
    --pidfile "$work/backend.pid" --log "$work/backend.log" --txpkts 64 > /dev/null
}

ours_once() {  # $1 = txonly|rxonly, $2 = back-end mode, $3 = seconds; prints "packets Ir"
  backend "$2"
  valgrind --tool=callgrind --cache-sim="$cache_sim" --callgrind-out-file="$work/ours.cg" \
    "$work/pmd" --socket "$work/sock" --forward-mode "$1" --duration "$3" --stats-period 0 $ours_flags \
    > "$work/ours.out" 2> "$work/ours.err"
  Scripts/testpmd.sh stop --pidfile "$work/backend.pid"
  local label=TX
  [ "$1" = rxonly ] && label=RX
  echo "$(awk -v l="$label packets:" 'index($0, l) { print $3; exit }' "$work/ours.out") $(ir_of "$work/ours.cg")"
}

dpdk_once() {  # same for testpmd's virtio-user
  backend "$2"
  setsid valgrind --tool=callgrind --cache-sim="$cache_sim" --callgrind-out-file="$work/dpdk.cg" \
    dpdk-testpmd -l 0,1 --main-lcore 1 --no-pci --no-huge -m 256 --no-shconf --file-prefix="cgf$$" \
    --vdev "virtio_user0,path=$work/sock,queues=1$devargs" -- --forward-mode="$1" --txpkts=64 \
    --stats-period 1 --total-num-mbufs=16384 < /dev/null > "$work/dpdk.out" 2>&1 &
  local pid=$!
  # Traffic starts once testpmd, slowed by valgrind, has come up; then give it $3 seconds.
  for _ in $(seq 600); do grep -q "packet forwarding - ports=" "$work/dpdk.out" 2>/dev/null && break; sleep 0.1; done
  sleep "$3"
  kill -INT "$pid" 2>/dev/null || true
  # testpmd under callgrind needs a while to stop and write its counts; a SIGKILL here would
  # lose them, so wait generously.
  for _ in $(seq 3000); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    echo "callgrind-ipp: testpmd did not stop within 300 s; its counts are lost" >&2
  fi
  Scripts/testpmd.sh stop --pidfile "$work/backend.pid"
  local label=TX-packets
  [ "$1" = rxonly ] && label=RX-packets
  local packets
  packets=$(awk -v l="$label:" '/Accumulated forward statistics/ { found = 1 } found && index($0, l) { print $2; exit }' "$work/dpdk.out")
  echo "${packets:-0} $(ir_of "$work/dpdk.cg")"
}

backend_once() {  # $1 = our back-end mode, $2 = testpmd's mode, $3 = seconds; prints "packets Ir"
  rm -f "$work/sock"
  valgrind --tool=callgrind --cache-sim="$cache_sim" --callgrind-out-file="$work/backend.cg" \
    "$work/backend" --socket "$work/sock" --mode "$1" --queues 1 --duration "$3" \
    > "$work/backend.out" 2> "$work/backend.err" &
  local pid=$!
  for _ in $(seq 600); do [ -S "$work/sock" ] && break; sleep 0.1; done
  Scripts/testpmd.sh virtio-user --socket "$work/sock" --prefix "cgv$$" --forward-mode "$2" --txpkts 64 \
    --pidfile "$work/frontend.pid" --log "$work/frontend.log" > /dev/null
  wait "$pid"
  Scripts/testpmd.sh stop --pidfile "$work/frontend.pid"
  echo "$(awk '/^connections/ { for (i = 1; i < NF; i++) if ($i == "received") { print $(i + 1); exit } }' "$work/backend.out") $(ir_of "$work/backend.cg")"
}

per_packet() {  # lines "side loop packets Ir [D1 LL] packets Ir [D1 LL]" (short run, long run)
  awk '
    BEGIN { printf "%-8s %-9s %14s %16s %10s %9s %9s\n", "side", "loop", "Δpackets", "Δinstructions", "Ir/packet", "D1m/pkt", "LLm/pkt" }
    { n = (NF - 2) / 2; dp = $(3 + n) - $3; di = $(4 + n) - $4
      ipp = (dp > 0) ? di / dp : 0
      d1 = (n == 4 && dp > 0) ? sprintf("%.2f", ($(5 + n) - $5) / dp) : "-"
      ll = (n == 4 && dp > 0) ? sprintf("%.2f", ($(6 + n) - $6) / dp) : "-"
      printf "%-8s %-9s %14.0f %16.0f %10.1f %9s %9s\n", $1, $2, dp, di, ipp, d1, ll }'
}

if [ "$measure_backend" -eq 1 ]; then
  # Two seconds for the short run: the front-end connects while the back-end already counts.
  for pair in "sink txonly" "loopback flowgen"; do
    set -- $pair
    short=$(backend_once "$1" "$2" 2)
    long=$(backend_once "$1" "$2" $((2 + 2 * seconds)))
    echo "backend $1 $short $long"
  done | per_packet
  exit 0
fi

measure() {  # $1 = ours|dpdk, $2 = loop, $3 = back-end mode
  local short long
  short=$("$1_once" "$2" "$3" 1)
  long=$("$1_once" "$2" "$3" $((1 + 2 * seconds)))
  echo "$1 $2 $short $long"
}

{
  measure ours txonly rxonly
  measure dpdk txonly rxonly
  measure ours rxonly txonly
  measure dpdk rxonly txonly
} | per_packet
