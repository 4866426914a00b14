#!/usr/bin/env bash
# Reserve N 2 MiB hugepages (at least; never lowers the count) and make sure hugetlbfs is
# mounted at /dev/hugepages. Needs root. Prints the number now reserved.
#   hugepages.sh N
set -euo pipefail
want=${1:?usage: hugepages.sh N}
knob=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
[ -w "$knob" ] || { echo "hugepages: error: cannot write $knob (run as root)" >&2; exit 2; }
have=$(cat "$knob")
if [ "$have" -lt "$want" ]; then
  echo "$want" > "$knob"
  have=$(cat "$knob")
fi
if [ "$have" -lt "$want" ]; then
  echo "hugepages: error: only $have of $want 2 MiB pages could be reserved (memory too fragmented?)" >&2
  exit 2
fi
if ! grep -qs " /dev/hugepages hugetlbfs " /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
fi
echo "$have"
