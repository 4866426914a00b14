// TAP devices for the back-end's exception path; see CVirtioShim.h.
//
// The TAP carries virtio-net headers (IFF_VNET_HDR) so a front-end's checksum and
// segmentation requests reach the kernel as they are, the way vhost-net does it.
#define _GNU_SOURCE
#include "CVirtioShim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

_Static_assert(CVS_TAP_NAME_MAX + 1 == IFNAMSIZ, "interface names");
_Static_assert(CVS_TAP_OFFLOAD_CSUM == TUN_F_CSUM && CVS_TAP_OFFLOAD_TSO4 == TUN_F_TSO4 &&
               CVS_TAP_OFFLOAD_TSO6 == TUN_F_TSO6, "TUN_F_* values");

int cvs_tap_open(const char *name, char *actual_name) {
    if (strlen(name) > CVS_TAP_NAME_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int header_size = 12;  // struct virtio_net_hdr_v1: what VERSION_1 front-ends use
    unsigned int little_endian = 1;
    if (ioctl(fd, TUNSETIFF, &ifr) != 0 || ioctl(fd, TUNSETVNETHDRSZ, &header_size) != 0 ||
        ioctl(fd, TUNSETOFFLOAD, 0u) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    // Only needed on big-endian hosts, where the kernel's default is native order.
    (void)ioctl(fd, TUNSETVNETLE, &little_endian);
    memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
    actual_name[CVS_TAP_NAME_MAX] = '\0';
    return fd;
}

int cvs_tap_set_offloads(int fd, unsigned int offloads) { return ioctl(fd, TUNSETOFFLOAD, offloads); }
