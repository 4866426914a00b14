#!/usr/bin/env bash
# Installs Debian packages for the install-*.sh scripts: Scripts/apt-install.sh WHO PACKAGE…
# (WHO names the caller in messages). As root directly, else through sudo; without either it
# says which command to run. Callers check for what they need first, so this runs only when
# something is missing.
set -euo pipefail
who=$1; shift
if [ "$(id -u)" -eq 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo); else
  echo "$who: error: $* missing; run as root or: apt-get install -y $*" >&2
  exit 2
fi
echo "$who: installing $*" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq "$@" >/dev/null
