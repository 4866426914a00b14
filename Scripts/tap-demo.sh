#!/usr/bin/env bash
# The TAP exception path end to end: the kernel of a fresh network namespace pings an app
# that has no kernel network stack — ping-responder, on VirtioUserDevice — through
# `vhost-user-backend --mode tap`. Addresses come from TEST-NET-1 (192.0.2.0/24) in a namespace
# of its own, so nothing can leave it.
#
#   tap-demo.sh [--bin DIR] [--count N] [--interval SECONDS]
#
# --bin       directory holding vhost-user-backend and ping-responder (default .build/release,
#             built if missing)
# --count     pings to send (default 100); --interval between them (default 0.01)
# Needs root (a TAP and a network namespace). Exits 0 only when every ping was answered.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="" count=100 interval=0.01
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --count) count=$2; shift 2 ;;
    --interval) interval=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tap-demo: error: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "tap-demo: error: needs root (a TAP device and a network namespace)" >&2; exit 2; }
command -v ping >/dev/null 2>&1 || Scripts/install-tools.sh

if [ -z "$bin" ]; then
  bin=.build/release
  if [ ! -x "$bin/vhost-user-backend" ] || [ ! -x "$bin/ping-responder" ]; then
    source Scripts/setup.sh
    swift build -c release --product vhost-user-backend >&2
    swift build -c release --product ping-responder >&2
  fi
fi
bin=$(cd "$bin" && pwd)

namespace=usv-tap-$$
tap=usvtap$$
workdir=$(mktemp -d /tmp/tap-demo.XXXXXX)
socket=$workdir/tap.sock
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$namespace" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

# 1. The back-end creates the TAP and serves the socket.
"$bin/vhost-user-backend" --mode tap --tap "$tap" --socket "$socket" >"$workdir/backend.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$socket" ] && ip link show "$tap" >/dev/null 2>&1 && break; sleep 0.1; done
ip link show "$tap" >/dev/null 2>&1 || { cat "$workdir/backend.log" >&2; echo "tap-demo: error: the back-end did not create $tap" >&2; exit 2; }

# 2. The TAP moves into a namespace of its own, as the kernel end: 192.0.2.1/24.
ip netns add "$namespace"
ip link set "$tap" netns "$namespace"
ip -n "$namespace" addr add 192.0.2.1/24 dev "$tap"
ip -n "$namespace" link set "$tap" up

# 3. The app answers for 192.0.2.2 (it prints its first line once its link is up).
"$bin/ping-responder" --socket "$socket" --ip 192.0.2.2 >"$workdir/responder.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "answering for" "$workdir/responder.log" && break; sleep 0.1; done

# 4. The namespace's kernel pings it; -w makes ping fail unless all $count replies come back.
status=0
ip netns exec "$namespace" ping -n -c "$count" -i "$interval" -w 60 192.0.2.2 | tail -n 3 || status=$?

# The app first, so it does not see its back-end go away.
for index in 1 0; do kill -TERM "${pids[$index]}" 2>/dev/null || true; wait "${pids[$index]}" 2>/dev/null || true; done
pids=()
echo "--- ping-responder"; cat "$workdir/responder.log"
echo "--- vhost-user-backend"; cat "$workdir/backend.log"
exit "$status"
