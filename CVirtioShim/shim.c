// System-level helpers for Swift; see include/CVirtioShim.h for the contract of each.
#define _GNU_SOURCE
#include "CVirtioShim.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <fcntl.h>
#include <numa.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

int cvs_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

int cvs_memfd_seal_size(int fd) {
    return fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
}

void *cvs_mmap_shared(int fd, size_t length, off_t offset) {
    void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
    return p == MAP_FAILED ? NULL : p;
}

void *cvs_mmap_shared_populated(int fd, void *addr, size_t length) {
    int flags = MAP_SHARED | MAP_POPULATE | (addr ? MAP_FIXED : 0);
    void *p = mmap(addr, length, PROT_READ | PROT_WRITE, flags, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

int cvs_munmap(void *addr, size_t length) { return munmap(addr, length); }

int cvs_dup_onto(int from, int onto) { return dup3(from, onto, O_CLOEXEC); }

int64_t cvs_file_size(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -1;
    return (int64_t)st.st_size;
}

int64_t cvs_file_system_page_size(int fd) {
    struct statfs fs;
    if (fstatfs(fd, &fs) != 0) return -1;
    return (int64_t)fs.f_bsize;
}

int cvs_numa_bind_local(void *addr, size_t length) {
    if (numa_available() < 0) return -1;
    int cpu = sched_getcpu();
    if (cpu < 0) return -2;
    int node = numa_node_of_cpu(cpu);
    if (node < 0) return -2;
    // numa_tonode_memory sets an mbind(2) policy on the range; it only matters before the pages
    // are first touched, which is why callers bind a fresh mapping before writing to it.
    numa_tonode_memory(addr, length, node);
    return node;
}

int cvs_eventfd(unsigned int initval) { return eventfd(initval, EFD_CLOEXEC | EFD_NONBLOCK); }

int cvs_unix_socket(void) { return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0); }

// An AF_UNIX address for `path`: "@name" is `name` in the abstract namespace (Linux: no file,
// scoped to the network namespace); a path that fits sun_path goes in as it is; a longer one is
// reached through its directory, opened O_PATH, as /proc/self/fd/N/<name> (*dirfd is then that
// directory, for the caller to close). Returns the address length, or -1 with errno.
static int fill_sockaddr(struct sockaddr_un *sun, const char *path, int *dirfd) {
    size_t n = strlen(path);
    *dirfd = -1;
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if (path[0] == '@') {
        if (n < 2 || n - 1 > sizeof(sun->sun_path) - 1) {
            errno = ENAMETOOLONG;
            return -1;
        }
        memcpy(sun->sun_path + 1, path + 1, n - 1);
        return (int)(offsetof(struct sockaddr_un, sun_path) + n);
    }
    if (n == 0 || n >= PATH_MAX) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (n < sizeof(sun->sun_path)) {
        memcpy(sun->sun_path, path, n + 1);
        return (int)sizeof(*sun);
    }
    const char *slash = strrchr(path, '/');
    if (slash == NULL || slash[1] == '\0') {
        errno = ENAMETOOLONG;
        return -1;
    }
    char directory[PATH_MAX];
    size_t length = slash == path ? 1 : (size_t)(slash - path);
    memcpy(directory, path, length);
    directory[length] = '\0';
    int fd = open(directory, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int written = snprintf(sun->sun_path, sizeof(sun->sun_path), "/proc/self/fd/%d/%s", fd, slash + 1);
    if (written < 0 || (size_t)written >= sizeof(sun->sun_path)) {
        close(fd);
        errno = ENAMETOOLONG;
        return -1;
    }
    *dirfd = fd;
    return (int)sizeof(*sun);
}

// connect(2) or bind(2) `fd` to `path`'s address; the directory fd a long path needed is
// closed after, errno kept.
static int with_address(int fd, const char *path, int (*operation)(int, const struct sockaddr *, socklen_t)) {
    struct sockaddr_un sun;
    int dirfd;
    int length = fill_sockaddr(&sun, path, &dirfd);
    if (length < 0) return -1;
    int result = operation(fd, (struct sockaddr *)&sun, (socklen_t)length);
    if (dirfd >= 0) {
        int saved = errno;
        close(dirfd);
        errno = saved;
    }
    return result;
}

int cvs_unix_connect(int fd, const char *path) { return with_address(fd, path, connect); }

int cvs_unix_bind(int fd, const char *path) { return with_address(fd, path, bind); }

int cvs_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }

size_t cvs_unix_path_max(void) { return sizeof(((struct sockaddr_un *)0)->sun_path) - 1; }

size_t cvs_unix_long_path_max(void) { return PATH_MAX - 1; }

ssize_t cvs_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    union {
        char buf[CMSG_SPACE(sizeof(int) * CVS_MAX_RECV_FDS)];
        struct cmsghdr align;
    } control;
    if (nfds > 0) {
        if (nfds > CVS_MAX_RECV_FDS) {
            errno = EINVAL;
            return -1;
        }
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    return sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

ssize_t cvs_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *flags) {
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    union {
        char buf[CMSG_SPACE(sizeof(int) * CVS_MAX_RECV_FDS)];
        struct cmsghdr align;
    } control;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    *nfds = 0;
    *flags = 0;
    ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return n;
    if (msg.msg_flags & MSG_CTRUNC) *flags |= CVS_RECV_CTRUNC;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const unsigned char *data = CMSG_DATA(c);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, data + i * sizeof(int), sizeof(int));
            if (*nfds < maxfds) {
                fds[(*nfds)++] = fd;
            } else {
                // Never leak what a peer pushed on us: close the surplus and let Swift refuse.
                close(fd);
                *flags |= CVS_RECV_TOO_MANY_FDS;
            }
        }
    }
    return n;
}

int cvs_set_thread_name(pthread_t thread, const char *name) { return pthread_setname_np(thread, name); }

int cvs_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}
