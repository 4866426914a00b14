// lwIP's raw API as Debian builds it (liblwip-dev: NO_SYS 0, core locking, IPv4 and IPv6),
// for VirtioUserIP. Only the raw-API headers: lwip/sockets.h and lwip/inet.h would pull in
// <netinet/tcp.h>, whose TCP_MSS (512) silently replaces lwIP's. The inline functions stand in
// for lwIP's function-like macros, which Swift cannot call.
#ifndef CLWIP_SHIM_H
#define CLWIP_SHIM_H

#include <lwip/opt.h>
#include <lwip/init.h>
#include <lwip/tcpip.h>
#include <lwip/tcp.h>
#include <lwip/udp.h>
#include <lwip/pbuf.h>
#include <lwip/inet_chksum.h>
#include <lwip/netif.h>
#include <lwip/ip_addr.h>
#include <lwip/etharp.h>
#include <lwip/ethip6.h>
#include <lwip/nd6.h>
#include <lwip/mld6.h>
#include <netif/ethernet.h>

/// Bytes the connection's send buffer takes now.
static inline uint32_t clwip_tcp_sndbuf(const struct tcp_pcb *pcb) { return (uint32_t)tcp_sndbuf(pcb); }

/// Segments the connection may still queue (tcp_write fails with ERR_MEM past TCP_SND_QUEUELEN).
static inline int clwip_tcp_sndqueue_room(const struct tcp_pcb *pcb) {
    return (int)TCP_SND_QUEUELEN - (int)tcp_sndqueuelen(pcb);
}

/// Sends small writes at once (request/response traffic) instead of waiting to fill a segment.
static inline void clwip_tcp_nodelay(struct tcp_pcb *pcb) { tcp_nagle_disable(pcb); }

/// SO_REUSEADDR: lwIP's bind checks ports across every interface, and each of ours may use
/// the same port (VirtioUserIP keeps ports unique per interface itself).
static inline void clwip_tcp_reuse_address(struct tcp_pcb *pcb) { ip_set_option(pcb, SOF_REUSEADDR); }
static inline void clwip_tcp_clear_reuse_address(struct tcp_pcb *pcb) { ip_reset_option(pcb, SOF_REUSEADDR); }
static inline void clwip_udp_reuse_address(struct udp_pcb *pcb) { ip_set_option(pcb, SOF_REUSEADDR); }

static inline uint8_t clwip_tcp_state(const struct tcp_pcb *pcb) { return (uint8_t)pcb->state; }

/// An IPv4 address from its four bytes in network order (a.b.c.d).
static inline ip_addr_t clwip_ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    ip_addr_t address;
    IP_ADDR4(&address, a, b, c, d);
    return address;
}

/// An IPv6 address from its sixteen bytes in network order; a link-local one gets the zone
/// (interface index) `zone`, which lwIP needs to route it.
static inline ip_addr_t clwip_ip6(const uint8_t bytes[16], uint8_t zone) {
    ip_addr_t address;
    uint32_t words[4];
    for (int i = 0; i < 4; i++) {
        words[i] = ((uint32_t)bytes[4 * i] << 24) | ((uint32_t)bytes[4 * i + 1] << 16) | ((uint32_t)bytes[4 * i + 2] << 8) | bytes[4 * i + 3];
    }
    IP_ADDR6(&address, PP_HTONL(words[0]), PP_HTONL(words[1]), PP_HTONL(words[2]), PP_HTONL(words[3]));
    ip6_addr_clear_zone(ip_2_ip6(&address));
    if (zone != 0 && ip6_addr_has_scope(ip_2_ip6(&address), IP6_UNKNOWN)) ip6_addr_set_zone(ip_2_ip6(&address), zone);
    return address;
}

static inline int clwip_ip_is_v4(const ip_addr_t *address) { return IP_IS_V4(address); }

/// The four bytes of an IPv4 address, in network order, as one value (first byte lowest).
static inline uint32_t clwip_ip4_raw(const ip_addr_t *address) { return ip_2_ip4(address)->addr; }

/// Word `i` (0-3) of an IPv6 address, in network order.
static inline uint32_t clwip_ip6_word(const ip_addr_t *address, int i) { return ip_2_ip6(address)->addr[i]; }

static inline const ip_addr_t *clwip_any_address(void) { return IP_ANY_TYPE; }

static inline uint8_t clwip_netif_index(const struct netif *netif) { return netif_get_index(netif); }

static inline const ip_addr_t *clwip_ip6_address(const struct netif *netif, int i) { return &netif->ip6_addr[i]; }
static inline uint8_t clwip_ip6_address_state(const struct netif *netif, int i) { return netif_ip6_addr_state(netif, i); }

/// The flags an Ethernet netif needs (ARP, broadcast, IGMP and MLD multicast).
static inline uint8_t clwip_ethernet_netif_flags(void) {
    return NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET | NETIF_FLAG_IGMP | NETIF_FLAG_MLD6;
}

/// Whether some interface is the default route already.
static inline int clwip_has_default_netif(void) { return netif_default != NULL; }

/// Clears the netif's addresses without lwIP's address-change handling, which aborts every TCP
/// connection with the old address whatever its netif (another tenant's, with the same address).
static inline void clwip_netif_clear_addresses_quietly(struct netif *netif) {
    ip_addr_set_zero_ip4(&netif->ip_addr);
    for (int i = 0; i < LWIP_IPV6_NUM_ADDRESSES; i++) netif->ip6_addr_state[i] = IP6_ADDR_INVALID;
}

#endif
