#!/usr/bin/env bash
# Installs what building and testing need, when it is missing. Idempotent; safe to run often.
# Needs root (or sudo) only when something must be installed.
set -euo pipefail

need_packages=()
# libnuma: the C shim binds shared memory to the caller's NUMA node.
[ -e /usr/include/numa.h ] || need_packages+=(libnuma-dev)
# lwIP (VirtioUserIP's TCP/IP stack) and pkg-config, which tells SwiftPM where its headers are.
[ -e /usr/include/lwip/lwipopts.h ] || need_packages+=(liblwip-dev)
command -v pkg-config >/dev/null 2>&1 || need_packages+=(pkgconf)
# setpriv and unshare (util-linux): the tests run as an unprivileged user and in namespaces.
command -v setpriv >/dev/null 2>&1 || need_packages+=(util-linux)

if [ ${#need_packages[@]} -gt 0 ]; then
  echo "setup: installing ${need_packages[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "setup: error: ${need_packages[*]} missing; run this as root or install them: apt-get install -y ${need_packages[*]}" >&2
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

if ! command -v swift >/dev/null 2>&1; then
  for candidate in /opt/swift/usr/bin /usr/share/swift/usr/bin; do
    if [ -x "$candidate/swift" ]; then export PATH="$candidate:$PATH"; break; fi
  done
fi
if ! command -v swift >/dev/null 2>&1; then
  echo "setup: error: no Swift toolchain on PATH; install Swift 6.x (swift.org) and retry." >&2
  exit 2
fi
