#!/usr/bin/env bash
# Installs what the QEMU guest tests need, when it is missing: QEMU (qemu-system-x86), a Linux
# kernel for the guest (linux-image-amd64), a static busybox for its initramfs
# (busybox-static) and cpio to pack it.
set -euo pipefail
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
# busybox-static: the dynamic busybox package would need its libraries in the initramfs.
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then as_root=(); elif command -v sudo >/dev/null 2>&1; then as_root=(sudo); else
  echo "install-qemu: error: ${missing[*]} missing; run as root or: apt-get install -y ${missing[*]}" >&2
  exit 2
fi
echo "install-qemu: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo "install-qemu: error: qemu-system-x86_64 still missing after install" >&2; exit 2; }
compgen -G '/boot/vmlinuz-*' >/dev/null || { echo "install-qemu: error: no /boot/vmlinuz-* after installing linux-image-amd64" >&2; exit 2; }
