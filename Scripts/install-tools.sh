#!/usr/bin/env bash
# Installs the Debian packages the tests drive, when their commands are missing:
#   tshark (PacketCaptureTests reads our pcap files back with it);
#   ping and ip (TapBridgeTests and Scripts/tap-demo.sh ping through a TAP in a network namespace);
#   python3-yaml (KubernetesManifestTests parses the manifests in Docs/KUBERNETES.md);
#   curl (IPStackTapTests makes HTTP requests to the http-hello example through a TAP).
set -euo pipefail
missing=()
command -v tshark >/dev/null 2>&1 || missing+=(tshark)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v curl >/dev/null 2>&1 || missing+=(curl)
python3 -c 'import yaml' >/dev/null 2>&1 || missing+=(python3-yaml)
[ ${#missing[@]} -eq 0 ] && exit 0
"$(dirname "$0")/apt-install.sh" install-tools "${missing[@]}"
for command in tshark ping ip curl; do
  command -v "$command" >/dev/null 2>&1 || { echo "install-tools: error: $command still missing after install" >&2; exit 2; }
done
python3 -c 'import yaml' || { echo "install-tools: error: python3-yaml still missing after install" >&2; exit 2; }
