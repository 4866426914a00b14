// Allocation counting by interposition: these definitions take precedence over libc's for the
// test executable, and forward to glibc's internal entry points.
#define _GNU_SOURCE
#include "CAllocationCounter.h"
#include <errno.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZER_OWNS_MALLOC 1
#endif
#endif

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static __thread int counting;
static __thread uint64_t count;

static __thread int watched;
static uint64_t watched_total;

static inline void note(void) {
    if (counting) count++;
    if (watched) __atomic_fetch_add(&watched_total, 1, __ATOMIC_RELAXED);
}

void allocation_counter_watch_this_thread(void) { watched = 1; }

uint64_t allocation_counter_watched_total(void) { return __atomic_load_n(&watched_total, __ATOMIC_RELAXED); }

void allocation_counter_start(void) {
    count = 0;
    counting = 1;
}

uint64_t allocation_counter_stop(void) {
    counting = 0;
    return count;
}

#ifdef SANITIZER_OWNS_MALLOC
int allocation_counter_available(void) { return 0; }
#else
int allocation_counter_available(void) { return 1; }

void *malloc(size_t size) {
    note();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size) {
    note();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size) {
    note();
    return __libc_realloc(p, size);
}

void free(void *p) { __libc_free(p); }

void *memalign(size_t alignment, size_t size) {
    note();
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    note();
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    note();
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    void *p = __libc_memalign(alignment, size);
    if (p == NULL) return ENOMEM;
    *out = p;
    return 0;
}
#endif
