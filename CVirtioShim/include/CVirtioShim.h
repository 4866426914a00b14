// CVirtioShim: the few things Swift cannot say directly on Linux.
//
// - split and packed virtqueue layouts (VIRTIO 1.1 §2.7, §2.8) and ordered access to the indices and flags that
//   two processes share;
// - memfd / hugetlb memfd creation, sealing and shared mappings;
// - eventfd, AF_UNIX helpers and SCM_RIGHTS send/receive (the CMSG_* macros do not import);
// - libnuma placement of a fresh region on the calling thread's node.
//
// Policy lives in Swift; every function here does one system-level thing and reports errno.
#ifndef CVIRTIO_SHIM_H
#define CVIRTIO_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <pthread.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Split virtqueue layout (VIRTIO 1.1 §2.7.5, §2.7.6, §2.7.8)

/// One descriptor table entry: 16 bytes, little-endian (x86_64 and arm64 are).
struct cvs_vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

/// One used ring element: 8 bytes.
struct cvs_vring_used_elem {
    uint32_t id;
    uint32_t len;
};

enum {
    CVS_VRING_DESC_F_NEXT = 1,
    CVS_VRING_DESC_F_WRITE = 2,
    CVS_VRING_DESC_F_INDIRECT = 4,
    CVS_VRING_AVAIL_F_NO_INTERRUPT = 1,
    CVS_VRING_USED_F_NO_NOTIFY = 1,
    /// Alignments the spec requires of each part (§2.7: 16, 2 and 4 bytes).
    CVS_VRING_DESC_ALIGN = 16,
    CVS_VRING_AVAIL_ALIGN = 2,
    CVS_VRING_USED_ALIGN = 4,
};

/// Bytes of the descriptor table for `num` entries.
static inline size_t cvs_vring_desc_bytes(uint32_t num) { return (size_t)num * 16u; }
/// Bytes of the available ring: flags, idx, ring[num], used_event.
static inline size_t cvs_vring_avail_bytes(uint32_t num) { return 4u + (size_t)num * 2u + 2u; }
/// Bytes of the used ring: flags, idx, ring[num], avail_event.
static inline size_t cvs_vring_used_bytes(uint32_t num) { return 4u + (size_t)num * 8u + 2u; }

// Field offsets inside the avail and used rings.
static inline uint16_t *cvs_avail_flags(void *avail) { return (uint16_t *)avail; }
static inline uint16_t *cvs_avail_idx(void *avail) { return (uint16_t *)avail + 1; }
static inline uint16_t *cvs_avail_ring(void *avail) { return (uint16_t *)avail + 2; }
static inline uint16_t *cvs_avail_used_event(void *avail, uint32_t num) { return (uint16_t *)avail + 2 + num; }
static inline uint16_t *cvs_used_flags(void *used) { return (uint16_t *)used; }
static inline uint16_t *cvs_used_idx(void *used) { return (uint16_t *)used + 1; }
static inline struct cvs_vring_used_elem *cvs_used_ring(void *used) {
    return (struct cvs_vring_used_elem *)((uint16_t *)used + 2);
}
static inline uint16_t *cvs_used_avail_event(void *used, uint32_t num) {
    return (uint16_t *)((char *)used + 4 + (size_t)num * 8u);
}

// MARK: - Packed virtqueue layout (VIRTIO 1.1 §2.8)

/// One packed descriptor: 16 bytes. The driver makes it available and the device returns it
/// used in the same slot; the flags say which (AVAIL/USED against each side's wrap counter).
struct cvs_pvirtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t id;
    uint16_t flags;
};

enum {
    CVS_VIRTQ_DESC_F_AVAIL = 1 << 7,
    CVS_VIRTQ_DESC_F_USED = 1 << 15,
    /// Event suppression flags (§2.8.10): notify always, never, or at one descriptor.
    CVS_RING_EVENT_FLAGS_ENABLE = 0,
    CVS_RING_EVENT_FLAGS_DISABLE = 1,
    CVS_RING_EVENT_FLAGS_DESC = 2,
    /// Alignments (§2.8.10.1 / vhost-user): the ring 16 bytes, each event area 4.
    CVS_PVIRTQ_DESC_ALIGN = 16,
    CVS_PVIRTQ_EVENT_ALIGN = 4,
    /// Bytes of one event suppression area: off_wrap, then flags.
    CVS_PVIRTQ_EVENT_BYTES = 4,
};

/// The flags of descriptor `i`: read and written with the ordered accessors below, since the
/// flags are what hands a descriptor from one side to the other.
static inline uint16_t *cvs_pdesc_flags(struct cvs_pvirtq_desc *ring, uint32_t i) { return &ring[i].flags; }
/// The fields of an event suppression area.
static inline uint16_t *cvs_pevent_off_wrap(void *area) { return (uint16_t *)area; }
static inline uint16_t *cvs_pevent_flags(void *area) { return (uint16_t *)area + 1; }

// MARK: - Ordered access to shared indices and flags
//
// The other side of a ring runs in another process. Index publications are release stores (the
// entries they cover become visible first); index reads are acquire loads (entries are read only
// after the index). Flags are read with relaxed atomic loads so that the compiler re-reads them
// in a poll loop instead of hoisting a plain load out of it.

static inline uint16_t cvs_load_acquire_u16(const uint16_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint16_t cvs_load_relaxed_u16(const uint16_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void cvs_store_release_u16(uint16_t *p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void cvs_store_relaxed_u16(uint16_t *p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
/// Full barrier: needed between publishing an index and reading the peer's notification flags
/// (VIRTIO 1.1 §2.7.7/§2.7.10: store then load, which acquire/release alone do not order).
static inline void cvs_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
/// Asymmetric fences, for a handshake where one side runs per burst and the other rarely (a
/// queue pair's data path against its control path): the frequent side orders its store before
/// its load with ``cvs_light_fence`` (a compiler barrier, no instruction), and the rare side
/// calls ``cvs_heavy_fence`` (membarrier(2)), which stands in for a full barrier on every
/// thread of the process. Only when ``cvs_asymmetric_fences_available`` returned 1; otherwise
/// both sides need full fences.
static inline void cvs_light_fence(void) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
/// 1 when membarrier's private expedited command is registered for this process (asked once).
int cvs_asymmetric_fences_available(void);
/// A full fence on this thread and every running thread of the process (membarrier(2)); a
/// plain full fence when asymmetric fences are unavailable.
void cvs_heavy_fence(void);
/// A full barrier on every CPU running a thread of the process by a TLB shootdown (mprotect
/// of a private page): ``cvs_heavy_fence``'s stand-in should membarrier fail. 0 on success.
int cvs_shootdown_barrier(void);
/// A spin-wait hint (x86 PAUSE): eases the pressure a polling loop puts on cache lines the
/// other side is writing.
static inline void cvs_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

// MARK: - Shared memory

enum {
    /// Close-on-exec, allow sealing (we seal against shrinking so a peer cannot make our own
    /// mapping fault with SIGBUS by truncating the file).
    CVS_MEMFD_DEFAULT = 0x0001 | 0x0002,
    CVS_MEMFD_HUGETLB = 0x0004,
    CVS_MEMFD_HUGE_SHIFT = 26,
};

/// memfd_create(2). Returns the fd or -1 with errno.
int cvs_memfd_create(const char *name, unsigned int flags);
/// Seals the file's size (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL). Returns 0 or -1 with errno.
int cvs_memfd_seal_size(int fd);
/// mmap(fd, len, offset) read/write shared; returns NULL with errno on failure.
void *cvs_mmap_shared(int fd, size_t length, off_t offset);
/// mmap(fd, len, 0) read/write shared with every page faulted in (MAP_POPULATE: the kernel
/// allocates and zeroes them in one pass), anywhere when `addr` is NULL, else at exactly `addr`,
/// replacing whatever was mapped there in one step. Returns NULL with errno on failure.
void *cvs_mmap_shared_populated(int fd, void *addr, size_t length);
/// munmap(2): 0 or -1 with errno.
int cvs_munmap(void *addr, size_t length);
/// dup3(from, onto, O_CLOEXEC): `onto` now refers to `from`'s open file (its old one closed).
/// Returns `onto`, or -1 with errno.
int cvs_dup_onto(int from, int onto);
/// Size of `fd` as fstat(2) reports it, or -1 with errno.
int64_t cvs_file_size(int fd);
/// The page size of the file system holding `fd` as fstatfs(2) reports it (f_bsize: the
/// hugepage size on hugetlbfs, 4 KiB on tmpfs), or -1 with errno.
int64_t cvs_file_system_page_size(int fd);
/// Binds [addr, addr+len) to the NUMA node of the CPU the caller runs on. Returns the node, or
/// -1 when libnuma reports no NUMA support (nothing to do then), or -2 when binding failed.
int cvs_numa_bind_local(void *addr, size_t length);

// MARK: - Peer memory that may shrink under us

/// Registers [start, start + length), a mapping of a peer's file, as memory the peer may
/// truncate. A SIGBUS inside it no longer kills the process: the whole range is replaced by
/// anonymous zero memory at the first fault, so that access and every later one complete, and
/// the range's fault count goes up for the owner to notice and end the peer's session. SIGBUS
/// elsewhere keeps its previous disposition. The handler is installed on first use. Returns a
/// slot, or -1 with errno (ENOSPC: 2048 ranges in use).
int cvs_guard_register(void *start, size_t length);
/// Forgets a slot (before the range is unmapped).
void cvs_guard_unregister(int slot);
/// SIGBUS faults absorbed in a slot's range since it was registered.
uint64_t cvs_guard_faults(int slot);
/// Faults absorbed in the whole process: one load, cheap enough to poll after every burst.
uint64_t cvs_guard_total_faults(void);

// MARK: - eventfd

/// eventfd(initval, EFD_CLOEXEC | EFD_NONBLOCK). Returns the fd or -1 with errno.
int cvs_eventfd(unsigned int initval);

/// Signals an eventfd a peer gave us (a call fd) without ever sleeping on the peer's terms:
/// nothing is written while the counter is non-zero (the peer is already signalled) or full;
/// otherwise the write runs under a one-shot timer of `timeout_ms` whose signal
/// (cvs_peer_write_signal) interrupts it if the peer cleared O_NONBLOCK and filled the counter.
/// Returns 0, -ETIMEDOUT when the write had to be interrupted, or -errno.
int cvs_peer_eventfd_signal(int fd, int timeout_ms);
/// Reads and clears a peer's eventfd (a kick fd) with RWF_NOWAIT, so it never sleeps whatever
/// the file's flags. Returns 1 with the count in *value, 0 when it was zero, or -errno.
int cvs_peer_eventfd_drain(int fd, uint64_t *value);
/// write(2) under a one-shot per-thread timer of `timeout_ms`: returns bytes written, or
/// -ETIMEDOUT when the write slept that long and was interrupted, or -errno.
ssize_t cvs_write_bounded(int fd, const void *buf, size_t len, int timeout_ms);
/// The real-time signal cvs_write_bounded's timer raises (SIGRTMAX - 2); its handler,
/// installed on first use, does nothing.
int cvs_peer_write_signal(void);

// MARK: - AF_UNIX stream sockets

/// socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC). Returns the fd or -1 with errno.
int cvs_unix_socket(void);
/// connect(2) to `path`: "@name" in the abstract namespace; a filesystem path longer than
/// sun_path through an O_PATH fd of its directory (/proc/self/fd/N/name). ENAMETOOLONG when
/// neither fits.
int cvs_unix_connect(int fd, const char *path);
/// bind(2) to `path`, addressed as cvs_unix_connect does.
int cvs_unix_bind(int fd, const char *path);
/// accept4(fd, NULL, NULL, SOCK_CLOEXEC). Returns the fd or -1 with errno.
int cvs_accept_cloexec(int fd);
/// Largest path that fits sun_path, without its terminating NUL.
size_t cvs_unix_path_max(void);
/// Largest filesystem path cvs_unix_connect/bind take (through the directory's fd), PATH_MAX - 1.
size_t cvs_unix_long_path_max(void);

// MARK: - SCM_RIGHTS

/// Most fds one receive accepts; more are closed and reported as an error by the caller.
enum { CVS_MAX_RECV_FDS = 16 };

/// POLLRDHUP (a _GNU_SOURCE constant): the peer shut down its writing half.
enum { CVS_POLLRDHUP = 0x2000 };

/// sendmsg(2) of `len` bytes with `nfds` descriptors attached (MSG_NOSIGNAL: a dead peer is
/// EPIPE, never SIGPIPE; MSG_DONTWAIT: a peer that stops reading is EAGAIN, never a sleep).
/// Returns bytes sent or -1 with errno.
ssize_t cvs_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// Result flags of cvs_recv_with_fds.
enum {
    /// The kernel truncated the control data (MSG_CTRUNC): some fds were lost.
    CVS_RECV_CTRUNC = 1,
    /// More than `maxfds` fds arrived; the extra ones were closed.
    CVS_RECV_TOO_MANY_FDS = 2,
};

/// recvmsg(2) of up to `len` bytes with MSG_CMSG_CLOEXEC. Received fds (at most `maxfds`) are
/// stored in `fds` and counted in `*nfds`; `*flags` gets CVS_RECV_* bits. Returns bytes read
/// (0 at end of stream) or -1 with errno.
ssize_t cvs_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *flags);

// MARK: - TAP devices (the back-end's exception path to the kernel)

/// Longest TAP interface name, without its terminating NUL (IFNAMSIZ - 1).
enum { CVS_TAP_NAME_MAX = 15 };

/// Opens /dev/net/tun (O_NONBLOCK, O_CLOEXEC) and attaches to the TAP `name`, creating it when
/// it does not exist ("" lets the kernel pick tapN): IFF_TAP | IFF_NO_PI | IFF_VNET_HDR with a
/// 12-byte virtio-net header (the VERSION_1 layout, little-endian) and no receive offloads.
/// The interface's name goes to `actual_name` (CVS_TAP_NAME_MAX + 1 bytes). Returns the fd or
/// -1 with errno (ENOENT: no /dev/net/tun; EPERM: needs CAP_NET_ADMIN or a persistent TAP owned
/// by the caller; EBUSY: attached elsewhere; EINVAL: `name` is not a TAP).
int cvs_tap_open(const char *name, char *actual_name);
/// TUNSETOFFLOAD: which offloads the kernel may use in frames it hands us (CVS_TAP_OFFLOAD_*).
/// Returns 0 or -1 with errno.
int cvs_tap_set_offloads(int fd, unsigned int offloads);

/// TUN_F_* bits for cvs_tap_set_offloads.
enum {
    CVS_TAP_OFFLOAD_CSUM = 0x01,
    CVS_TAP_OFFLOAD_TSO4 = 0x02,
    CVS_TAP_OFFLOAD_TSO6 = 0x04,
};

// MARK: - Small helpers

/// pthread_setname_np (needs _GNU_SOURCE, so it does not import). Returns 0 or an errno.
int cvs_set_thread_name(pthread_t thread, const char *name);
/// Pins the calling thread to one CPU (sched_setaffinity). Returns 0 or -1 with errno.
int cvs_pin_current_thread(int cpu);

#ifdef __cplusplus
}
#endif

#endif
