#!/usr/bin/env bash
# The main job: build virtio-user-pmd (release) and run it. With no arguments it runs 5 seconds
# of txonly traffic through an embedded Swift vhost-user back-end in loopback mode and checks
# that every frame came back. Any virtio-user-pmd option can be passed (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/setup.sh
swift build -c release --product virtio-user-pmd >&2
exec .build/release/virtio-user-pmd "$@"
