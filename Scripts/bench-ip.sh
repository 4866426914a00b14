#!/usr/bin/env bash
# VirtioUserIP against the kernel, through the same client (a benchmark, not a test; it prints).
# The client runs in a network namespace of its own, 192.0.2.1/24, and reaches 192.0.2.2:
#
#   ours:   its TAP → vhost-user-backend --mode tap → our device → lwIP (VirtioUserIP), with
#           http-hello on :8080 and `virtio-bench ip-sink` on :5001;
#   nio:    the same path, with nio-http-hello (NIOHTTP1's handlers over VirtioUserIPNIO) on
#           :8080 (requests only);
#   kernel: a veth pair → a second namespace's kernel stack, with nginx (`return 200 "hello"`)
#           on :8080 and a Python sink (recv_into) on :5001.
#
# Per round, for each side: TCP throughput (Tests/IPClients/ip_client.py tcp-blast: 1 MiB
# sendall for --seconds) and requests per second (wrk, keep-alive, --connections). The rounds
# interleave the sides; the last lines are the medians.
#
#   bench-ip.sh [--rounds N] [--seconds S] [--connections C] [--bin DIR]
#
# --bin: where vhost-user-backend, http-hello, nio-http-hello and virtio-bench are (default
# .build/release, built first). Needs root (TAP, namespaces); installs wrk and nginx-light when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 seconds=5 connections=16 bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-ip: error: unknown option $1 (see --help)" >&2; exit 64 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "bench-ip: error: needs root (a TAP and network namespaces)" >&2; exit 2; }
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
[ ${#missing[@]} -eq 0 ] || Scripts/apt-install.sh bench-ip "${missing[@]}"
Scripts/install-tools.sh

if [ -z "$bin" ]; then
  bin=.build/release
  source Scripts/setup.sh
  # Always (an up-to-date build takes a second): a stale binary would measure old code.
  for product in vhost-user-backend http-hello nio-http-hello virtio-bench; do
    swift build -c release --product "$product" >&2
  done
fi
bin=$(cd "$bin" && pwd)
client_script=$PWD/Tests/IPClients/ip_client.py

tag=$$
client=usv-ipb-c$tag server=usv-ipb-s$tag tap=usvipb$tag
workdir=$(mktemp -d /tmp/bench-ip.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -f "$workdir/nginx.pid" ] && kill "$(cat "$workdir/nginx.pid")" 2>/dev/null || true
  ip netns del "$client" 2>/dev/null || true
  ip netns del "$server" 2>/dev/null || true
  ip netns del "$client-k" 2>/dev/null || true
  rm -rf "$workdir"
}
trap cleanup EXIT

wait_for() {  # a command that must succeed within 10 s
  for _ in $(seq 100); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "bench-ip: error: timed out waiting for: $*" >&2; exit 2
}

# Ours: the back-end's TAP in the client's namespace; our stack on the other side.
"$bin/vhost-user-backend" --mode tap --tap "$tap" --socket "$workdir/tap.sock" >"$workdir/backend.log" 2>&1 &
pids+=($!)
wait_for ip link show "$tap"
ip netns add "$client"
ip link set "$tap" netns "$client"
ip -n "$client" addr add 192.0.2.1/24 dev "$tap"
ip -n "$client" link set "$tap" up
# The back-end serves one front-end at a time: http-hello and the sink take turns (measure).
server_pid=""
start_ours() {  # product and its arguments
  "$bin/$1" "${@:2}" >"$workdir/$1.log" 2>&1 &
  server_pid=$!
  pids+=($server_pid)
  # A new device has a new MAC: forget the old one's.
  ip -n "$client" neigh flush dev "$tap"
}
stop_ours() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }

# Kernel: a veth pair between a second client namespace and the server's.
ip netns add "$client-k"
ip netns add "$server"
ip link add "v$tag" netns "$client-k" type veth peer name "w$tag" netns "$server"
ip -n "$client-k" addr add 192.0.2.1/24 dev "v$tag"
ip -n "$server" addr add 192.0.2.2/24 dev "w$tag"
ip -n "$client-k" link set "v$tag" up
ip -n "$server" link set "w$tag" up
ip -n "$server" link set lo up
cat > "$workdir/nginx.conf" <<CONF
worker_processes 1;
pid $workdir/nginx.pid;
error_log $workdir/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/plain;
  server { listen 192.0.2.2:8080; location / { return 200 "hello\n"; } }
}
CONF
ip netns exec "$server" nginx -c "$workdir/nginx.conf" -p "$workdir" -g 'daemon on;'
ip netns exec "$server" python3 "$client_script" tcp-sink 5001 &
pids+=($!)

wait_for ip netns exec "$client-k" curl -s -m 1 http://192.0.2.2:8080/

blast() { ip netns exec "$1" python3 "$client_script" tcp-blast 192.0.2.2 5001 "$seconds" | awk '{print $2}'; }
requests() { ip netns exec "$1" wrk -t1 -c"$connections" -d"${seconds}s" http://192.0.2.2:8080/ | awk '/Requests\/sec/ {printf "%.0f", $2}'; }

measure() {  # side → "Mbit/s requests/s"
  local mbit rps
  if [ "$1" = kernel ]; then
    mbit=$(blast "$client-k")
    rps=$(requests "$client-k")
  elif [ "$1" = nio ]; then
    mbit=-
    start_ours nio-http-hello "$workdir/tap.sock" 192.0.2.2/24 8080
    wait_for ip netns exec "$client" curl -s -m 1 http://192.0.2.2:8080/
    rps=$(requests "$client")
    stop_ours
  else
    start_ours virtio-bench ip-sink --socket "$workdir/tap.sock" --address 192.0.2.2/24 --port 5001
    wait_for ip netns exec "$client" bash -c 'exec 3<>/dev/tcp/192.0.2.2/5001'
    mbit=$(blast "$client")
    stop_ours
    start_ours http-hello "$workdir/tap.sock" 192.0.2.2/24 8080
    wait_for ip netns exec "$client" curl -s -m 1 http://192.0.2.2:8080/
    rps=$(requests "$client")
    stop_ours
  fi
  echo "$mbit $rps"
}

printf '%-6s %-7s %12s %14s\n' round side "TCP Mbit/s" "requests/s"
: > "$workdir/ours" ; : > "$workdir/nio" ; : > "$workdir/kernel"
for round in $(seq "$rounds"); do
  for side in ours nio kernel; do
    read -r mbit rps < <(measure "$side")
    echo "$mbit $rps" >> "$workdir/$side"
    printf '%-6s %-7s %12s %14s\n' "$round" "$side" "$mbit" "$rps"
  done
done
median() { sort -n | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for side in ours nio kernel; do
  printf '%-6s %-7s %12s %14s\n' median "$side" "$(cut -d' ' -f1 "$workdir/$side" | median)" "$(cut -d' ' -f2 "$workdir/$side" | median)"
done
