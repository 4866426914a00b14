#!/usr/bin/env bash
# Installs what the QEMU guest tests need, when it is missing: QEMU (qemu-system-x86), a Linux
# kernel for the guest (linux-image-amd64), a static busybox for its initramfs
# (busybox-static) and cpio to pack it; Debian's python3 for the host end of the guest's TCP
# test.
set -euo pipefail
missing=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
# busybox-static: the dynamic busybox package would need its libraries in the initramfs.
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
command -v cpio >/dev/null 2>&1 || missing+=(cpio)
[ -x /usr/bin/python3 ] || missing+=(python3)
[ ${#missing[@]} -eq 0 ] && exit 0
"$(dirname "$0")/apt-install.sh" install-qemu "${missing[@]}"
command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo "install-qemu: error: qemu-system-x86_64 still missing after install" >&2; exit 2; }
compgen -G '/boot/vmlinuz-*' >/dev/null || { echo "install-qemu: error: no /boot/vmlinuz-* after installing linux-image-amd64" >&2; exit 2; }
