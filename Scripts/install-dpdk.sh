#!/usr/bin/env bash
# Installs DPDK from Debian (dpdk, and dpdk-dev, which holds dpdk-testpmd) when missing.
set -euo pipefail
if command -v dpdk-testpmd >/dev/null 2>&1; then exit 0; fi
"$(dirname "$0")/apt-install.sh" install-dpdk dpdk dpdk-dev
command -v dpdk-testpmd >/dev/null 2>&1 || { echo "install-dpdk: error: dpdk-testpmd still missing after install" >&2; exit 2; }
