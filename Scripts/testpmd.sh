#!/usr/bin/env bash
# Start and stop dpdk-testpmd as a vhost-user peer for interop tests and benchmarks.
#
#   testpmd.sh vhost       --socket PATH --prefix NAME [options]   testpmd's vhost PMD (a back-end)
#   testpmd.sh virtio-user --socket PATH --prefix NAME [options]   testpmd's virtio-user (a front-end)
#   testpmd.sh stop        --pidfile FILE [--timeout S]            SIGINT (totals printed), then SIGKILL
#   testpmd.sh kill        --pidfile FILE                          SIGKILL, as a crash would
#
# Options for vhost / virtio-user:
#   --forward-mode M   io (default), macswap, rxonly, txonly, csum …
#   --client           vhost: connect to a listening front-end (client=1)
#   --server           virtio-user: listen and wait for the back-end (server=1)
#   --hugepages        use 2 MiB hugepages (reserve them first: Scripts/hugepages.sh); default
#                      is --no-huge (memfd memory, no root needed for the memory itself)
#   --tx-first         send a first burst (io/macswap/csum)
#   --txpkts N         frame length for txonly / --tx-first
#   --multi-flow       txonly / --tx-first frames differ (source IP varies: --txonly-multi-flow)
#   --log FILE         testpmd's output (default /tmp/testpmd-NAME.log)
#   --pidfile FILE     where the pid goes (default /tmp/testpmd-NAME.pid)
#   --ready-timeout S  how long to wait for testpmd to start forwarding (default 30)
#   --queue-size N     RX/TX descriptors (default 256)
#   --queues N         queue pairs (default 1): queues=N on the vdev, --rxq=N --txq=N; one
#                      forwarding core polls them all
#   --devargs A        extra vdev arguments, appended after a comma (e.g. packed_vq=1)
#
# It starts testpmd in the background, waits (bounded) until it forwards, prints its pid, and
# returns. Only the pid it wrote is ever signalled. The log's last "Accumulated forward
# statistics" block holds the totals after `stop`.
set -euo pipefail

die() { echo "testpmd.sh: error: $*" >&2; exit 2; }

command -v dpdk-testpmd >/dev/null 2>&1 || die "dpdk-testpmd not found; run Scripts/install-dpdk.sh"
[ $# -ge 1 ] || die "usage: testpmd.sh vhost|virtio-user|stop|kill [options]"
action=$1
shift

multiflow=0 socket="" prefix="" mode=io client=0 server=0 huge=0 txfirst=0 txpkts="" log="" pidfile=""
ready_timeout=30 timeout=10 qsize=256 queues=1 devargs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --socket) socket=$2; shift 2 ;;
    --prefix) prefix=$2; shift 2 ;;
    --forward-mode) mode=$2; shift 2 ;;
    --client) client=1; shift ;;
    --server) server=1; shift ;;
    --hugepages) huge=1; shift ;;
    --tx-first) txfirst=1; shift ;;
    --txpkts) txpkts=$2; shift 2 ;;
    --multi-flow) multiflow=1; shift ;;
    --log) log=$2; shift 2 ;;
    --pidfile) pidfile=$2; shift 2 ;;
    --ready-timeout) ready_timeout=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --queue-size) qsize=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --devargs) devargs=$2; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done

signal_and_wait() {
  local sig=$1
  [ -n "$pidfile" ] || die "--pidfile is required"
  [ -f "$pidfile" ] || die "no pid file $pidfile"
  local pid
  pid=$(cat "$pidfile")
  # Only our own testpmd: the pid must still be a dpdk-testpmd.
  if ! grep -q dpdk-testpmd "/proc/$pid/cmdline" 2>/dev/null; then
    rm -f "$pidfile"
    return 0
  fi
  kill -"$sig" "$pid" 2>/dev/null || true
  local waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((timeout * 10)) ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
  rm -f "$pidfile"
}

case "$action" in
  stop) signal_and_wait INT; exit 0 ;;
  kill) signal_and_wait KILL; exit 0 ;;
  vhost|virtio-user) ;;
  *) die "unknown action $action" ;;
esac

[ -n "$socket" ] || die "--socket is required"
[ -n "$prefix" ] || die "--prefix is required (a distinct EAL file prefix per testpmd)"
log=${log:-/tmp/testpmd-$prefix.log}
pidfile=${pidfile:-/tmp/testpmd-$prefix.pid}

eal=(--no-pci --file-prefix="$prefix")
if [ "$huge" -eq 1 ]; then
  eal+=(--in-memory --single-file-segments)
else
  eal+=(--no-huge -m 256 --no-shconf)
fi
if [ "$action" = vhost ]; then
  eal+=(-l 0,1 --main-lcore 0)
  vdev="net_vhost0,iface=$socket,queues=$queues"
  [ "$client" -eq 1 ] && vdev+=",client=1"
else
  eal+=(-l 0,1 --main-lcore 1)
  vdev="virtio_user0,path=$socket,queues=$queues,queue_size=$qsize"
  [ "$server" -eq 1 ] && vdev+=",server=1"
fi
[ -n "$devargs" ] && vdev+=",$devargs"
app=(--forward-mode="$mode" --stats-period 1 --total-num-mbufs=16384 --rxd="$qsize" --txd="$qsize"
     --rxq="$queues" --txq="$queues" --nb-cores=1)
[ "$txfirst" -eq 1 ] && app+=(--tx-first)
[ -n "$txpkts" ] && app+=(--txpkts="$txpkts")
[ "$multiflow" -eq 1 ] && app+=(--txonly-multi-flow)

: > "$log"
# Close every inherited descriptor above stderr: a caller that watches an fd to learn when we
# exit (Foundation's Process does, with a socket) must not wait for testpmd too.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null || true
done
# setsid: testpmd gets its own session, so a signal to our caller's group never reaches it by
# accident, and it is stopped only through its pid file.
setsid dpdk-testpmd "${eal[@]}" --vdev "$vdev" -- "${app[@]}" < /dev/null >> "$log" 2>&1 &
pid=$!
echo "$pid" > "$pidfile"

waited=0
until grep -q "packet forwarding - ports=" "$log" 2>/dev/null; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$log" >&2
    rm -f "$pidfile"
    die "dpdk-testpmd exited during start-up (log: $log)"
  fi
  if [ "$waited" -ge $((ready_timeout * 10)) ]; then
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    tail -n 20 "$log" >&2
    die "dpdk-testpmd did not start forwarding within ${ready_timeout}s (log: $log)"
  fi
  sleep 0.1
  waited=$((waited + 1))
done
echo "$pid"
