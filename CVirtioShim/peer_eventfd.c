// Reads and writes on eventfds a peer sent us, bounded in time; see CVirtioShim.h.
//
// O_NONBLOCK belongs to the open file, which the peer shares: it can clear the flag at any
// moment, drain a kick fd before our read, or fill a call fd's counter to its maximum before
// our write. Then a plain read(2) or write(2) sleeps until the peer chooses otherwise.
// - Reads use preadv2(RWF_NOWAIT), which eventfd honours whatever the file's flags say.
// - eventfd has no write_iter, so RWF_NOWAIT cannot reach a write (EOPNOTSUPP). A write is
//   skipped when the counter is already non-zero (the peer is signalled), and otherwise runs
//   under a one-shot per-thread timer whose signal interrupts it if the peer made it sleep.
#define _GNU_SOURCE
#include "CVirtioShim.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static pthread_key_t timer_key;
static int install_error;

// Interrupting the write is all it is for (installed without SA_RESTART).
static void on_guard_signal(int sig) { (void)sig; }

static void delete_timer(void *timer) {
    timer_delete((timer_t)timer);
}

static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = on_guard_signal;
    sigemptyset(&action.sa_mask);
    if (sigaction(cvs_peer_write_signal(), &action, NULL) != 0 ||
        pthread_key_create(&timer_key, delete_timer) != 0) {
        install_error = errno ? errno : EAGAIN;
    }
}

int cvs_peer_write_signal(void) { return SIGRTMAX - 2; }

// This thread's timer, created on first use and deleted when the thread ends.
static int thread_timer(timer_t *out) {
    pthread_once(&install_once, install);
    if (install_error) return -install_error;
    void *existing = pthread_getspecific(timer_key);
    if (existing) {
        *out = (timer_t)existing;
        return 0;
    }
    struct sigevent event;
    memset(&event, 0, sizeof(event));
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = cvs_peer_write_signal();
    event._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &event, &timer) != 0) return -errno;
    // The signal must reach this thread even if its creator blocked it.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, cvs_peer_write_signal());
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    pthread_setspecific(timer_key, (void *)timer);
    *out = timer;
    return 0;
}

static void arm(timer_t timer, int milliseconds) {
    struct itimerspec spec;
    memset(&spec, 0, sizeof(spec));
    spec.it_value.tv_sec = milliseconds / 1000;
    spec.it_value.tv_nsec = (long)(milliseconds % 1000) * 1000000L;
    timer_settime(timer, 0, &spec, NULL);
}

ssize_t cvs_write_bounded(int fd, const void *buf, size_t len, int timeout_ms) {
    timer_t timer;
    int error = thread_timer(&timer);
    if (error) return error;
    arm(timer, timeout_ms < 1 ? 1 : timeout_ms);
    ssize_t n = write(fd, buf, len);
    int saved = errno;
    arm(timer, 0);
    if (n >= 0) return n;
    return saved == EINTR ? -ETIMEDOUT : -saved;
}

int cvs_peer_eventfd_signal(int fd, int timeout_ms) {
    struct pollfd poller = {.fd = fd, .events = POLLIN | POLLOUT};
    if (poll(&poller, 1, 0) < 0) return -errno;
    if (poller.revents & POLLNVAL) return -EBADF;
    // A non-zero counter already wakes the peer; a full one cannot take more.
    if ((poller.revents & POLLIN) || !(poller.revents & POLLOUT)) return 0;
    uint64_t one = 1;
    ssize_t n = cvs_write_bounded(fd, &one, sizeof(one), timeout_ms);
    if (n == (ssize_t)sizeof(one) || n == -EAGAIN) return 0;  // EAGAIN: filled since the poll
    return n < 0 ? (int)n : -EIO;
}

int cvs_peer_eventfd_drain(int fd, uint64_t *value) {
    *value = 0;
    struct iovec vector = {.iov_base = value, .iov_len = sizeof(*value)};
    ssize_t n = preadv2(fd, &vector, 1, -1, RWF_NOWAIT);
    if (n == (ssize_t)sizeof(*value)) return 1;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n >= 0) return -EINVAL;
    return -errno;
}
