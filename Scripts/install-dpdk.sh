#!/usr/bin/env bash
# Installs DPDK from Debian (dpdk, and dpdk-dev, which holds dpdk-testpmd) when missing.
set -euo pipefail
if command -v dpdk-testpmd >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" -eq 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo); else
  echo "install-dpdk: error: dpdk-testpmd missing; run as root or: apt-get install -y dpdk dpdk-dev" >&2
  exit 2
fi
echo "install-dpdk: installing dpdk dpdk-dev" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq dpdk dpdk-dev >/dev/null
command -v dpdk-testpmd >/dev/null 2>&1 || { echo "install-dpdk: error: dpdk-testpmd still missing after install" >&2; exit 2; }
