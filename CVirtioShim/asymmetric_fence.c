// Asymmetric fences; see CVirtioShim.h. membarrier(2)'s private expedited command runs a full
// barrier on every CPU that is running a thread of this process (an IPI), and a thread that is
// not running passes a context switch, which is one, before it runs again.
#define _GNU_SOURCE
#include "CVirtioShim.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
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

static pthread_mutex_t shootdown_lock = PTHREAD_MUTEX_INITIALIZER;
static void *shootdown_page;

// Taking write access away from a page this process has dirtied makes the kernel flush its
// mapping from every CPU that may hold it, with an interrupt (a full barrier) on each CPU
// running a thread of the process: the barrier Folly's asymmetricHeavyBarrier and .NET's
// FlushProcessWriteBuffers fall back on without membarrier. 0 on success.
int cvs_shootdown_barrier(void) {
    long page = sysconf(_SC_PAGESIZE);
    int result = -1;
    pthread_mutex_lock(&shootdown_lock);
    if (shootdown_page == NULL) {
        void *mapped = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mapped != MAP_FAILED) shootdown_page = mapped;
    }
    if (shootdown_page != NULL) {
        *(volatile char *)shootdown_page = 1;
        result = mprotect(shootdown_page, (size_t)page, PROT_READ);
        if (result == 0) result = mprotect(shootdown_page, (size_t)page, PROT_READ | PROT_WRITE);
    }
    pthread_mutex_unlock(&shootdown_lock);
    return result;
}

void cvs_heavy_fence(void) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!cvs_asymmetric_fences_available()) return;
    // After a successful registration the command has no failure of its own (EPERM means
    // unregistered); should it ever report one, a TLB shootdown stands in. Only both failing
    // for good could keep this loop going.
    while (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0 && cvs_shootdown_barrier() != 0) sched_yield();
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
