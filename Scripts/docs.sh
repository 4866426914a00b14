#!/usr/bin/env bash
# Builds the DocC documentation of the libraries (VirtioUser, VirtioUserIP, VirtioUserIPNIO,
# VhostUserBackend, VirtioCore): the articles in Sources/*/*.docc and the API reference from the
# doc comments. Fails on any DocC warning (a broken symbol link, a missing article).
#
#   Scripts/docs.sh [output-dir]    (default .build/docs)
set -euo pipefail
cd "$(dirname "$0")/.."
source Scripts/setup.sh
out=${1:-.build/docs}
mkdir -p "$out"   # the plugin moves each archive into it, and needs it to exist
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in VirtioUser VirtioUserIP VirtioUserIPNIO VhostUserBackend VirtioCore; do
  status=0
  rm -rf "${out:?}/$target"
  swift package --allow-writing-to-directory "$out" generate-documentation --target "$target" \
    --output-path "$out/$target" --warnings-as-errors > "$log" 2>&1 || status=$?
  grep -E "warning:|error:" "$log" >&2 || true
  if [ "$status" -ne 0 ]; then
    tail -n 20 "$log" >&2
    echo "docs: $target failed" >&2
    exit 1
  fi
done
echo "docs: generated in $out (VirtioUser, VirtioUserIP, VirtioUserIPNIO, VhostUserBackend, VirtioCore)"
