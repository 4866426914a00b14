#!/usr/bin/env bash
# A Linux guest on QEMU whose virtio-net is served by a vhost-user back-end: the reference
# front-end (QEMU) and the most deployed virtio driver (Linux's virtio_net) against ours.
#
#   Scripts/qemu-guest.sh image [DIR]     builds the guest (default DIR .build/qemu-guest):
#       DIR/vmlinuz (Debian's linux-image-amd64) and DIR/initramfs.cpio.gz (busybox-static,
#       virtio_net and its dependencies, Scripts/guest/init); prints DIR
#   Scripts/qemu-guest.sh run --socket PATH [options]   boots it; the console is on stdout
#       --scenario FILE   a shell script the guest runs once eth0 exists (then it powers off)
#       --net-options O   extra virtio-net-pci properties, e.g. packed=on,mrg_rxbuf=off
#       --queues N        queue pairs (mq=on; the guest gets N CPUs so its driver uses them all)
#       --reconnect S     QEMU reconnects to a back-end that went away, every S seconds
#       --mac M           the guest's MAC (default 52:54:00:12:34:56)
#       --memory MB       guest memory (default 256), a shared memfd as vhost-user needs
#       --timeout S       kill QEMU after S seconds (default 300)
#
# The guest runs under TCG: /dev/kvm on these machines is a flavour a stock guest kernel cannot
# use. QEMU 7.2 under TCG crashes when the guest enables MSI-X vectors on a vhost-user device,
# so the device has none (vectors=0: legacy interrupts). The guest's /init prints
# "GUEST: scenario exit N" when the scenario ends.
set -euo pipefail
origin=$PWD
cd "$(dirname "$0")/.."

# A path given relative to where the script was called from.
from_origin() { case "$1" in /*) echo "$1" ;; *) echo "$origin/$1" ;; esac; }

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

build_image() {
  local dir=$1
  ./Scripts/install-qemu.sh
  local kernel release
  kernel=$(ls -1 /boot/vmlinuz-* | sort -V | tail -n 1)
  release=${kernel#/boot/vmlinuz-}
  local modules=/lib/modules/$release
  [ -f "$modules/modules.dep" ] || { echo "qemu-guest: error: $modules/modules.dep missing (reinstall linux-image-$release)" >&2; exit 2; }
  mkdir -p "$dir"
  local stamp="$release $(sha256sum Scripts/guest/init Scripts/qemu-guest.sh | sha256sum | cut -c1-16)"
  if [ -f "$dir/initramfs.cpio.gz" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$dir"; return
  fi
  local root
  root=$(mktemp -d)
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,proc,sys,dev,tmp,modules}
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"; done
  cp Scripts/guest/init "$root/init"
  chmod 755 "$root/init"
  # virtio_pci and virtio_net with their dependencies, each after what it needs (modules.dep
  # lists a module's dependencies, nearest first).
  local order=()
  add_module() {
    local path=$1 dependency
    for dependency in $(grep -E "^$path:" "$modules/modules.dep" | cut -d: -f2 | tr ' ' '\n' | tac); do
      add_module "$dependency"
    done
    local name
    name=$(basename "$path"); name=${name%%.ko*}
    [[ " ${order[*]-} " == *" $name "* ]] && return
    order+=("$name")
    case "$path" in
      *.ko.xz) xz -dc "$modules/$path" > "$root/modules/$name.ko" ;;
      *.ko.zst) zstd -qdc "$modules/$path" > "$root/modules/$name.ko" ;;
      *) cp "$modules/$path" "$root/modules/$name.ko" ;;
    esac
  }
  local wanted
  for wanted in virtio_pci virtio_net; do
    local path
    path=$(grep -oE "^[^:]*/$wanted\.ko[^:]*" "$modules/modules.dep" | head -n 1)
    [ -n "$path" ] || { echo "qemu-guest: error: $wanted is not a module of $release" >&2; exit 2; }
    add_module "$path"
  done
  printf '%s\n' "${order[@]}" > "$root/modules.order"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$dir/initramfs.cpio.gz"
  cp "$kernel" "$dir/vmlinuz"
  echo "$stamp" > "$dir/stamp"
  echo "$dir"
}

run_guest() {
  local socket="" scenario="" net_options="" queues=1 reconnect="" mac=52:54:00:12:34:56 memory=256 timeout=300
  while [ $# -gt 0 ]; do
    case "$1" in
      --socket) socket=$(from_origin "$2"); shift 2 ;;
      --scenario) scenario=$(from_origin "$2"); shift 2 ;;
      --net-options) net_options=$2; shift 2 ;;
      --queues) queues=$2; shift 2 ;;
      --reconnect) reconnect=$2; shift 2 ;;
      --mac) mac=$2; shift 2 ;;
      --memory) memory=$2; shift 2 ;;
      --timeout) timeout=$2; shift 2 ;;
      -h|--help) usage; exit 0 ;;
      *) echo "qemu-guest: error: unknown option $1 (see $0 --help)" >&2; exit 64 ;;
    esac
  done
  [ -n "$socket" ] || { echo "qemu-guest: error: --socket PATH is required" >&2; exit 64; }
  [ -z "$scenario" ] || [ -f "$scenario" ] || { echo "qemu-guest: error: no scenario file at $scenario" >&2; exit 64; }
  local dir
  dir=$(build_image .build/qemu-guest)
  local initrd="$dir/initramfs.cpio.gz"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if [ -n "$scenario" ]; then
    # Linux unpacks concatenated archives in turn, each starting 4-byte aligned (zeros between
    # them are skipped): the scenario lands beside /init.
    cp "$scenario" "$work/scenario.sh"
    (cd "$work" && echo scenario.sh | cpio -o -H newc --quiet) > "$work/scenario.cpio"
    local size
    size=$(stat -c %s "$initrd")
    { cat "$initrd"; head -c $(( (4 - size % 4) % 4 )) /dev/zero; cat "$work/scenario.cpio"; } > "$work/initrd"
    initrd="$work/initrd"
  fi
  local chardev="socket,id=vhost0,path=$socket"
  [ -n "$reconnect" ] && chardev+=",reconnect=$reconnect"
  local netdev="vhost-user,id=net0,chardev=vhost0"
  local device="virtio-net-pci,netdev=net0,mac=$mac,vectors=0"
  if [ "$queues" -gt 1 ]; then netdev+=",queues=$queues"; device+=",mq=on"; fi
  [ -n "$net_options" ] && device+=",$net_options"
  timeout --signal=KILL "$timeout" qemu-system-x86_64 \
    -machine pc,accel=tcg,memory-backend=mem0 -cpu max -smp "$queues" -m "${memory}M" \
    -object "memory-backend-memfd,id=mem0,size=${memory}M,share=on" \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$dir/vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init" \
    -chardev "$chardev" -netdev "$netdev" -device "$device" </dev/null
}

case "${1:-}" in
  image) build_image "$(from_origin "${2:-$PWD/.build/qemu-guest}")" ;;
  run) shift; run_guest "$@" ;;
  -h|--help) usage ;;
  *) usage >&2; exit 64 ;;
esac
