# A container image with virtio-user-pmd (and vhost-user-backend): the container side of
# DPDK's "Virtio_user for Container Networking" recipe, without DPDK, root or hugepages.
#
#   docker build -t swift-virtio-user .
#   # host: any vhost-user back-end listening on /tmp/sock0, e.g.
#   #   dpdk-testpmd --no-pci --no-huge -m 256 --vdev 'net_vhost0,iface=/tmp/sock0' -- --forward-mode=io --stats-period 1
#   #   (or .build/release/vhost-user-backend --socket /tmp/sock0), then: chmod 666 /tmp/sock0
#   docker run --rm -v /tmp/sock0:/var/run/usvhost swift-virtio-user --duration 10
#
# The image runs as an unprivileged user (65534), so the host socket must be writable by it
# (chmod 666), or run with --user 0.

ARG SWIFT_VERSION=6.3
FROM swift:${SWIFT_VERSION}-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma-dev liblwip-dev pkgconf \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY CVirtioShim CVirtioShim
COPY Sources Sources
COPY Tests Tests
RUN swift build -c release --static-swift-stdlib --product virtio-user-pmd \
    && swift build -c release --static-swift-stdlib --product vhost-user-backend \
    && install -m 755 .build/release/virtio-user-pmd .build/release/vhost-user-backend /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/virtio-user-pmd /usr/local/bin/vhost-user-backend /usr/local/bin/
USER 65534:65534
ENTRYPOINT ["virtio-user-pmd", "--socket", "/var/run/usvhost"]
CMD ["--duration", "10"]
