// Absorbs SIGBUS in memory a peer can truncate under us; see CVirtioShim.h.
//
// A vhost-user front-end hands us fds for files we map; if it later shrinks a file (DPDK does
// not seal its memfds), any access to a page past the new end raises SIGBUS, which would kill
// the whole back-end. Instead, the handler maps anonymous zero memory over the whole registered
// range (so the access, and every later one, completes harmlessly) and counts the fault against
// the range; the owner polls the counters and ends that peer's session.
//
// The whole range, not the faulting page: a page at a time would split the file mapping once
// per page the caller goes on to touch, and a peer that shrinks its memory under a long burst
// (or many peers at once, on a switch) could then drive the process into the kernel's limit on
// mappings (vm.max_map_count), where the next replacement fails and SIGBUS kills everything.
// One replacement per range leaves the number of mappings as it was, never reaches outside the
// range, and needs no page size (so no hugepage for a hugepage-backed range).
#define _GNU_SOURCE
#include "CVirtioShim.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

// 64 switch ports × 8 regions each, twice over for sessions being replaced, and room for
// other back-ends and devices in the same process.
enum { SLOTS = 2048 };

struct guarded_range {
    uintptr_t start;   // 0 when the slot is free (all fields via __atomic builtins)
    uintptr_t length;
    uint64_t faults;
};

static struct guarded_range ranges[SLOTS];
static uint64_t total_faults;
static struct sigaction previous;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_error;

static void on_sigbus(int sig, siginfo_t *info, void *context) {
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int i = 0; i < SLOTS; i++) {
        uintptr_t start = __atomic_load_n(&ranges[i].start, __ATOMIC_ACQUIRE);
        if (start == 0) continue;
        uintptr_t length = __atomic_load_n(&ranges[i].length, __ATOMIC_RELAXED);
        if (address - start >= length) continue;
        int saved = errno;
        void *p = mmap((void *)start, length, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        errno = saved;
        if (p == MAP_FAILED) break;  // cannot recover: fall through to the previous disposition
        __atomic_fetch_add(&ranges[i].faults, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&total_faults, 1, __ATOMIC_RELEASE);
        return;
    }
    // Not ours: behave as if we were never installed.
    if (previous.sa_flags & SA_SIGINFO) {
        previous.sa_sigaction(sig, info, context);
    } else if (previous.sa_handler != SIG_IGN && previous.sa_handler != SIG_DFL) {
        previous.sa_handler(sig);
    } else {
        // Re-raised on return from the faulting instruction with the default action.
        signal(SIGBUS, SIG_DFL);
    }
}

static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGBUS, &action, &previous) != 0) install_error = errno;
}

int cvs_guard_register(void *start, size_t length) {
    pthread_once(&install_once, install);
    if (install_error != 0) {
        errno = install_error;
        return -1;
    }
    if (start == NULL || length == 0) {
        errno = EINVAL;
        return -1;
    }
    for (int i = 0; i < SLOTS; i++) {
        uintptr_t expected = 0;
        // Claim with a placeholder that no fault address can match (length still 0).
        if (!__atomic_compare_exchange_n(&ranges[i].start, &expected, (uintptr_t)1, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) continue;
        __atomic_store_n(&ranges[i].length, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&ranges[i].faults, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&ranges[i].length, (uintptr_t)length, __ATOMIC_RELAXED);
        __atomic_store_n(&ranges[i].start, (uintptr_t)start, __ATOMIC_RELEASE);
        return i;
    }
    errno = ENOSPC;
    return -1;
}

void cvs_guard_unregister(int slot) {
    if (slot < 0 || slot >= SLOTS) return;
    __atomic_store_n(&ranges[slot].length, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&ranges[slot].start, 0, __ATOMIC_RELEASE);
}

uint64_t cvs_guard_faults(int slot) {
    if (slot < 0 || slot >= SLOTS) return 0;
    return __atomic_load_n(&ranges[slot].faults, __ATOMIC_ACQUIRE);
}

uint64_t cvs_guard_total_faults(void) { return __atomic_load_n(&total_faults, __ATOMIC_ACQUIRE); }
