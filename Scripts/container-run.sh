#!/usr/bin/env bash
# The container model without a Docker engine: our Swift vhost-user back-end runs on the host,
# and virtio-user-pmd runs "in a container" — new mount, PID and network namespaces
# (unshare), the host socket bind-mounted at /var/run/usvhost, as an unprivileged user — which
# is what `docker run -v /tmp/sock0:/var/run/usvhost …` gives a container.
#
#   container-run.sh [--socket HOST_PATH] [--bin DIR] [--user UID] [--mode loopback|sink]
#                    [--device-info client|server] [-- PMD_ARGS…]
#
# --socket       host socket path (default: a fresh one under /tmp)
# --bin          directory holding vhost-user-backend and virtio-user-pmd (default .build/release,
#                built if missing)
# --user         uid:gid inside the container (default 65534:65534, nobody; "root" keeps root)
# --device-info  wire the container the way Kubernetes' userspace CNI does instead: a host
#                directory for the socket mounted at /var/run/vhostuser (the socket named
#                <container id>-net1 in it), and a device-info file (k8snetworkplumbingwg
#                device-info-spec 1.1.0) mounted at /var/run/devinfo/net1-device.json, which
#                the device reads (--device-info) for the socket and who listens: "client", the
#                host's back-end listens; "server", the device listens and the back-end connects.
# Needs root on the host (namespaces, bind mounts). Exits with the device's status.
set -euo pipefail
cd "$(dirname "$0")/.."

socket="" bin="" user="65534:65534" mode=loopback device_info=""
while [ $# -gt 0 ]; do
  case "$1" in
    --socket) socket=$2; shift 2 ;;
    --device-info)
      device_info=$2; shift 2
      [ "$device_info" = client ] || [ "$device_info" = server ] \
        || { echo "container-run: error: --device-info takes client or server, not '$device_info'" >&2; exit 2; } ;;
    --bin) bin=$2; shift 2 ;;
    --user) user=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "container-run: error: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "container-run: error: needs root (namespaces and bind mounts)" >&2; exit 2; }

if [ -z "$bin" ]; then
  bin=.build/release
  if [ ! -x "$bin/virtio-user-pmd" ] || [ ! -x "$bin/vhost-user-backend" ]; then
    source Scripts/setup.sh
    swift build -c release --product virtio-user-pmd >&2
    swift build -c release --product vhost-user-backend >&2
  fi
fi
bin=$(cd "$bin" && pwd)

workdir=$(mktemp -d /tmp/container-run.XXXXXX)
chmod 755 "$workdir"
if [ -n "$device_info" ]; then
  [ -z "$socket" ] || { echo "container-run: error: --device-info places the socket itself; leave out --socket" >&2; exit 2; }
  # userspace CNI's layout: a shared directory per pod, the socket named after the container
  # (12 characters of its id) and the interface; the device-info file beside it, read-only.
  container_id=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
  socket_name=$container_id-net1
  mkdir -p "$workdir/shared" "$workdir/devinfo"
  chown "${user%%:*}:${user##*:}" "$workdir/shared" 2>/dev/null || true
  [ "$user" != root ] || chown root:root "$workdir/shared"
  printf '{"type": "vhost-user", "version": "1.1.0", "vhost-user": {"mode": "%s", "path": "/var/run/vhostuser/%s"}}\n' \
    "$device_info" "$socket_name" > "$workdir/devinfo/net1-device.json"
  socket=$workdir/shared/$socket_name
fi
socket=${socket:-$workdir/sock0}
backend_pid=""
cleanup() {
  if [ -n "$backend_pid" ] && kill -0 "$backend_pid" 2>/dev/null; then
    kill -TERM "$backend_pid" 2>/dev/null || true
    wait "$backend_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

# The host side: our back-end listening on the socket — or, when the device-info file says
# the container's device listens ("server"), connecting to it once it is there.
if [ "$device_info" = server ]; then
  "$bin/vhost-user-backend" --socket "$socket" --mode "$mode" --client > "$workdir/backend.log" 2>&1 &
  backend_pid=$!
else
  "$bin/vhost-user-backend" --socket "$socket" --mode "$mode" > "$workdir/backend.log" 2>&1 &
  backend_pid=$!
  for _ in $(seq 100); do [ -S "$socket" ] && break; sleep 0.1; done
  [ -S "$socket" ] || { cat "$workdir/backend.log" >&2; echo "container-run: error: back-end did not listen on $socket" >&2; exit 2; }
  # A container user other than root must be able to connect (write permission on the socket).
  chmod 0666 "$socket"
fi

echo "container-run: host net namespace $(readlink /proc/self/ns/net), socket $socket"

# The container side. A private /run (so /var/run/usvhost exists only in here), the host socket
# bound onto it, then the device as the container's user, with its own PID and network
# namespaces.
set +e
unshare --mount --pid --net --fork --mount-proc --propagation private \
  env SOCKET="$socket" WORKDIR="$workdir" DEVICE_INFO="$device_info" BIN="$bin" USERSPEC="$user" bash -c '
    set -e
    mount -t tmpfs -o mode=755 tmpfs /run
    if [ -n "$DEVICE_INFO" ]; then
      mkdir /run/vhostuser /run/devinfo
      mount --bind "$WORKDIR/shared" /run/vhostuser
      mount --bind -o ro "$WORKDIR/devinfo" /run/devinfo
      where=(--device-info /var/run/devinfo/net1-device.json)
      described="device-info /var/run/devinfo/net1-device.json ($DEVICE_INFO)"
    else
      touch /run/usvhost
      mount --bind "$SOCKET" /run/usvhost
      where=(--socket /var/run/usvhost)
      described="socket /var/run/usvhost"
    fi
    as_user=()
    if [ "$USERSPEC" != root ]; then
      as_user=(setpriv --reuid="${USERSPEC%%:*}" --regid="${USERSPEC##*:}" --clear-groups)
    fi
    echo "container-run: container net namespace $(readlink /proc/self/ns/net), pid $$, uid $("${as_user[@]}" id -u), $described"
    exec "${as_user[@]}" "$BIN/virtio-user-pmd" "${where[@]}" "$@"
  ' container "$@"
status=$?
set -e

kill -TERM "$backend_pid" 2>/dev/null || true
wait "$backend_pid" 2>/dev/null || true
backend_pid=""
echo "container-run: back-end on the host: $(tail -n 1 "$workdir/backend.log")"
exit "$status"
