#!/usr/bin/env bash
# Installs the Debian packages the tests drive, when their commands are missing:
#   tshark (PacketCaptureTests reads our pcap files back with it);
#   ping and ip (TapBridgeTests and Scripts/tap-demo.sh ping through a TAP in a network namespace).
set -euo pipefail
missing=()
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo); else
  echo "install-tools: error: ${missing[*]} missing; run as root or: apt-get install -y ${missing[*]}" >&2
  exit 2
fi
echo "install-tools: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
for command in tshark ping ip; do
  command -v "$command" >/dev/null 2>&1 || { echo "install-tools: error: $command still missing after install" >&2; exit 2; }
done
