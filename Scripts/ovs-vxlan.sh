#!/usr/bin/env bash
# Two hosts joined by OVS's VXLAN tunnel, on one machine: two network namespaces ("hosts"),
# each with its own OVS with DPDK (Scripts/ovs.sh), joined by a veth pair as their physical
# link. On each host a br-phy bridge holds the veth and the tunnel endpoint's address
# (10.10.0.1 and 10.10.0.2 on br-phy's internal port), and a br-int bridge cross-connects a
# dpdkvhostuserclient port with a vxlan port (VNI 42). One of our devices listens on each
# host's socket, as a container's would: A sends txonly frames with --verify, B receives and
# checks every one. Prints both summaries and the OVS counters; exits 0 when frames crossed
# intact. Needs root.
#
#   ovs-vxlan.sh [--bin DIR] [--seconds S] [--keep]
#
# --bin      directory holding virtio-user-pmd (default .build/release, built if missing)
# --seconds  how long A sends (default 3)
# --keep     leave the namespaces and OVS instances up (for a look with ip netns exec …)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="" seconds=3 keep=false
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --keep) keep=true; shift ;;
    *) echo "ovs-vxlan: error: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "ovs-vxlan: error: needs root (namespaces, OVS with DPDK)" >&2; exit 2; }
if [ -z "$bin" ]; then
  bin=.build/release
  if [ ! -x "$bin/virtio-user-pmd" ]; then
    source Scripts/setup.sh
    swift build -c release --product virtio-user-pmd >&2
  fi
fi
bin=$(cd "$bin" && pwd)
./Scripts/install-ovs.sh
./Scripts/install-tools.sh  # ip, ping

run=$(mktemp -d /tmp/ovs-vxlan.XXXXXX)
chmod 755 "$run"
tag=$(basename "$run" | tr -cd 'a-zA-Z0-9' | tail -c 6)
hosts=("vxa$tag" "vxb$tag")
addresses=(10.10.0.1 10.10.0.2)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  $keep && { echo "ovs-vxlan: kept: namespaces ${hosts[*]}, OVS in $run/a and $run/b"; return; }
  for side in a b; do ./Scripts/ovs.sh stop "$run/$side" >/dev/null 2>&1 || true; done
  for host in "${hosts[@]}"; do ip netns del "$host" 2>/dev/null || true; done
  rm -rf "$run"
}
trap cleanup EXIT

# The physical link between the hosts.
for host in "${hosts[@]}"; do ip netns add "$host"; ip -n "$host" link set lo up; done
ip link add "veth$tag" type veth peer name "vethp$tag"
ip link set "veth$tag" netns "${hosts[0]}"
ip link set "vethp$tag" netns "${hosts[1]}"
links=("veth$tag" "vethp$tag")

for i in 0 1; do
  side=$([ "$i" -eq 0 ] && echo a || echo b)
  host=${hosts[$i]} dir=$run/$side
  ovs() { ip netns exec "$host" ./Scripts/ovs.sh "$@"; }
  ip -n "$host" link set "${links[$i]}" up
  ovs start "$dir" --pmd-cpu 0 --memory 512 >/dev/null
  ovs vsctl "$dir" add-br br-phy -- set bridge br-phy datapath_type=netdev \
    -- add-port br-phy "${links[$i]}"
  ip -n "$host" addr add "${addresses[$i]}/24" dev br-phy
  ip -n "$host" link set br-phy up
  mkdir -p "$dir/sockets"
  chown 65534:65534 "$dir/sockets"
  ovs vsctl "$dir" add-br br-int -- set bridge br-int datapath_type=netdev \
    -- add-port br-int vxlan0 -- set Interface vxlan0 type=vxlan \
       "options:remote_ip=${addresses[$((1 - i))]}" options:key=42 \
    -- add-port br-int vhu -- set Interface vhu type=dpdkvhostuserclient \
       "options:vhost-server-path=$dir/sockets/$side.sock"
  ovs ofctl "$dir" del-flows br-int
  ovs ofctl "$dir" add-flow br-int "in_port=vhu,actions=output:vxlan0"
  ovs ofctl "$dir" add-flow br-int "in_port=vxlan0,actions=output:vhu"
done
# Resolve the tunnel endpoints before the first frame (OVS would drop frames until it had).
ip netns exec "${hosts[0]}" ping -c 3 -i 0.2 -W 2 "${addresses[1]}" >/dev/null \
  || { echo "ovs-vxlan: error: the hosts' br-phy addresses do not reach each other" >&2; exit 2; }

device() {  # device HOST SIDE PMD_ARGS… : a container's device, listening for its host's OVS
  local host=$1 side=$2
  shift 2
  ip netns exec "$host" unshare --net -- setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$bin/virtio-user-pmd" --server --socket "$run/$side/sockets/$side.sock" --connect-timeout 60000 \
    --stats-period 0 --verify "$@" > "$run/$side.out" 2> "$run/$side.err" &
  pids+=($!)
}
device "${hosts[1]}" b --forward-mode rxonly --rx-wait 10 --duration "$((seconds + 4))"
device "${hosts[0]}" a --forward-mode txonly --cpu 1 --duration "$seconds"
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
pids=()

echo "== A (host ${hosts[0]}, txonly --verify)"; cat "$run/a.out" "$run/a.err"
echo "== B (host ${hosts[1]}, rxonly --verify)"; cat "$run/b.out" "$run/b.err"
for i in 0 1; do
  side=$([ "$i" -eq 0 ] && echo a || echo b)
  for interface in vhu vxlan0; do
    echo "== OVS $side $interface: $(ip netns exec "${hosts[$i]}" ./Scripts/ovs.sh vsctl "$run/$side" get Interface "$interface" statistics)"
  done
done
intact=$(sed -n 's/.*verify: \([0-9]*\) intact, \([0-9]*\) corrupt.*/\1 \2/p' "$run/b.out")
if [ "$status" -ne 0 ] || [ -z "$intact" ] || [ "${intact% *}" -eq 0 ] || [ "${intact#* }" -ne 0 ]; then
  echo "ovs-vxlan: FAILED (exit statuses, or B's verify line: '${intact:-none}')" >&2
  exit 1
fi
echo "ovs-vxlan: OK: ${intact% *} frames crossed the VXLAN tunnel intact, 0 corrupt"
