// Asymmetric fences; see CVirtioShim.h. membarrier(2)'s private expedited command runs a full
// barrier on every CPU that is running a thread of this process (an IPI), and a thread that is
// not running passes a context switch, which is one, before it runs again.
#define _GNU_SOURCE
#include "CVirtioShim.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_once_t registration = PTHREAD_ONCE_INIT;
static int registered;

static long membarrier(int command) { return syscall(SYS_membarrier, command, 0, 0); }

static void register_private_expedited(void) {
    long commands = membarrier(MEMBARRIER_CMD_QUERY);
    // Older kernels, and seccomp profiles that refuse the call, leave the symmetric fences.
    if (commands < 0 || !(commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return;
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) return;
    registered = 1;
}

int cvs_asymmetric_fences_available(void) {
    pthread_once(&registration, register_private_expedited);
    return registered;
}

void cvs_heavy_fence(void) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!cvs_asymmetric_fences_available()) return;
    // After a successful registration the command has no failure of its own; the global one
    // (slower: it waits for a grace period) stands in if it ever reports one.
    if (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0) {
        while (membarrier(MEMBARRIER_CMD_GLOBAL) != 0) sched_yield();
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
