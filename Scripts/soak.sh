#!/usr/bin/env bash
# Soak: loopback traffic through the embedded Swift back-end for a long run (default 60 s),
# then checks that every frame came back with no error (virtio-user-pmd's own exit status), and
# that the process's resident memory and open fds stayed flat after the first seconds.
#
#   Scripts/soak.sh [seconds]        # CI runs it short; run it for hours by hand
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 4 ] || { echo "soak: seconds must be a whole number >= 4" >&2; exit 2; }
source Scripts/setup.sh
swift build -c release --product virtio-user-pmd >&2

out=$(mktemp)
trap 'rm -f "$out"' EXIT
.build/release/virtio-user-pmd --duration "$seconds" --stats-period 10 > "$out" 2>&1 &
pid=$!
# Sample RSS (KiB) and fd count once a second; the first 2 s (start-up, first touch of the
# pool) are the baseline's warm-up.
rss=()
fds=()
while kill -0 "$pid" 2>/dev/null; do
  if r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$r" ]; then
    rss+=("$r")
    fds+=("$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)")
  fi
  sleep 1
done
status=0
wait "$pid" || status=$?
cat "$out"

n=${#rss[@]}
if [ "$n" -lt 4 ]; then
  echo "soak: FAILED, only $n memory samples (did the run start?)" >&2
  exit 1
fi
base_rss=${rss[2]}
max_rss=$base_rss
for r in "${rss[@]:2}"; do [ "$r" -gt "$max_rss" ] && max_rss=$r; done
base_fds=${fds[2]}
max_fds=$base_fds
for f in "${fds[@]:2}"; do [ "$f" -gt "$max_fds" ] && max_fds=$f; done
growth=$((max_rss - base_rss))
echo "soak: ${seconds} s, RSS ${base_rss} KiB after 2 s, peak ${max_rss} KiB (+${growth} KiB); fds ${base_fds} -> peak ${max_fds}; exit ${status}"
[ "$status" -eq 0 ] || { echo "soak: FAILED, virtio-user-pmd exited $status (frames lost or errors counted)" >&2; exit 1; }
grep -q "result: OK" "$out" || { echo "soak: FAILED, no OK result line" >&2; exit 1; }
# Flat: a steady-state loop allocates nothing, so RSS may only wobble by a few pages.
[ "$growth" -le 1024 ] || { echo "soak: FAILED, RSS grew by ${growth} KiB" >&2; exit 1; }
[ "$max_fds" -eq "$base_fds" ] || { echo "soak: FAILED, fds grew from $base_fds to $max_fds" >&2; exit 1; }
echo "soak: OK"
