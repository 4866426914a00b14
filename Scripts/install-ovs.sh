#!/usr/bin/env bash
# Installs Open vSwitch with DPDK from Debian (openvswitch-switch-dpdk: its ovs-vswitchd-dpdk,
# with ovsdb-server and the ovs-* tools) when missing. Scripts/ovs.sh runs private instances of it.
set -euo pipefail
if [ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] && command -v ovsdb-server >/dev/null 2>&1; then exit 0; fi
"$(dirname "$0")/apt-install.sh" install-ovs openvswitch-switch-dpdk
[ -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ] \
  || { echo "install-ovs: error: ovs-vswitchd-dpdk still missing after install" >&2; exit 2; }
