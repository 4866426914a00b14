#!/usr/bin/env bash
# A private Open vSwitch with DPDK — the switch hosts run in front of containers' vhost-user
# ports — in a directory of its own: its own database, ovsdb-server and ovs-vswitchd (the DPDK
# build from Debian's openvswitch-switch-dpdk, run by path: the system's alternatives and any
# system-wide OVS are left alone). For the OVS interop tests and for trying our device behind
# OVS by hand. Needs root. Installs OVS when it is missing.
#
#   ovs.sh start DIR [--pmd-cpu N] [--memory MB]   a fresh instance in DIR (created)
#   ovs.sh vsctl|ofctl|appctl DIR ARGS…            ovs-vsctl/ovs-ofctl/ovs-appctl against it
#   ovs.sh kill DIR                                SIGKILL its ovs-vswitchd (a crash)
#   ovs.sh restart DIR                             start ovs-vswitchd again on the same database
#   ovs.sh stop DIR                                stop both daemons (DIR is kept: logs)
#
# DPDK runs without hugepages (--no-huge, MB of normal memory, default 1024): OVS copies
# frames in and out of the vhost-user front-ends' own shared memory, which is theirs to back
# with hugepages or not. OVS's datapath thread polls CPU N (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."

vswitchd=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
die() { echo "ovs.sh: error: $*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: ovs.sh start|vsctl|ofctl|appctl|kill|restart|stop DIR …"
command=$1 dir=$2
shift 2
[ "$(id -u)" -eq 0 ] || die "needs root (DPDK, vhost-user ports)"
export OVS_RUNDIR=$dir OVS_LOGDIR=$dir OVS_DBDIR=$dir

start_vswitchd() {
  # The daemons' stdio goes nowhere: a caller reading our output to its end must not wait on
  # them. What they say is in their log files.
  "$vswitchd" "unix:$dir/db.sock" --pidfile="$dir/ovs-vswitchd.pid" --detach \
    --log-file="$dir/ovs-vswitchd.log" -vconsole:off </dev/null >/dev/null 2>&1 \
    || { tail -20 "$dir/ovs-vswitchd.log" >&2; die "ovs-vswitchd did not start (log above)"; }
  for _ in $(seq 300); do
    [ "$(ovs-vsctl --timeout=5 get Open_vSwitch . dpdk_initialized 2>/dev/null)" = true ] && return 0
    sleep 0.1
  done
  tail -20 "$dir/ovs-vswitchd.log" >&2
  die "DPDK in ovs-vswitchd did not initialize within 30 s (log above)"
}

stop_daemon() {
  local pidfile=$dir/$1.pid
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "$command" in
  start)
    pmd_cpu=0 memory=1024
    while [ $# -gt 0 ]; do
      case "$1" in
        --pmd-cpu) pmd_cpu=$2; shift 2 ;;
        --memory) memory=$2; shift 2 ;;
        *) die "unknown option $1" ;;
      esac
    done
    ./Scripts/install-ovs.sh
    mkdir -p "$dir"
    [ ! -f "$dir/ovsdb-server.pid" ] || die "$dir already has an ovsdb-server; stop it first"
    rm -f "$dir/conf.db"
    ovsdb-tool create "$dir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$dir/conf.db" --remote="punix:$dir/db.sock" --pidfile="$dir/ovsdb-server.pid" \
      --detach --log-file="$dir/ovsdb-server.log" -vconsole:off </dev/null >/dev/null 2>&1 \
      || { tail -20 "$dir/ovsdb-server.log" >&2; die "ovsdb-server did not start (log above)"; }
    ovs-vsctl --no-wait init
    # --legacy-mem keeps OVS from adding --in-memory, which DPDK refuses with --no-huge;
    # --no-shconf and a file prefix of its own keep instances apart.
    ovs-vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
      "other_config:dpdk-extra=--no-huge -m $memory --legacy-mem --no-shconf --no-pci --file-prefix=ovs$$" \
      "other_config:pmd-cpu-mask=$(printf '0x%x' $((1 << pmd_cpu)))" other_config:per-port-memory=true
    start_vswitchd
    echo "ovs.sh: ovs-vswitchd $(cat "$dir/ovs-vswitchd.pid") with DPDK in $dir (datapath thread on CPU $pmd_cpu)"
    ;;
  vsctl) exec ovs-vsctl --timeout=30 "$@" ;;
  ofctl) exec ovs-ofctl "$@" ;;
  appctl)
    # ovs-appctl -t ovs-vswitchd would look for ovs-vswitchd.PID.ctl; the DPDK build's socket
    # carries its program name.
    [ -f "$dir/ovs-vswitchd.pid" ] || die "no ovs-vswitchd in $dir"
    exec ovs-appctl -t "$dir/ovs-vswitchd-dpdk.$(cat "$dir/ovs-vswitchd.pid").ctl" "$@" ;;
  kill)
    [ -f "$dir/ovs-vswitchd.pid" ] || die "no ovs-vswitchd in $dir"
    pid=$(cat "$dir/ovs-vswitchd.pid")
    kill -KILL "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/ovs-vswitchd.pid"
    ;;
  restart) start_vswitchd ;;
  stop)
    stop_daemon ovs-vswitchd
    stop_daemon ovsdb-server
    ;;
  *) die "unknown command $command (start, vsctl, ofctl, appctl, kill, restart, stop)" ;;
esac
