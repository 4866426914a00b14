// Counts heap allocations made by the calling thread, so a test can prove that a loop
// allocates nothing. malloc and friends are replaced for the whole test binary; they forward
// to glibc's implementation and only count when the calling thread has switched counting on.
#ifndef CALLOCATION_COUNTER_H
#define CALLOCATION_COUNTER_H
#include <stdint.h>

/// 1 when counting works in this build; 0 under AddressSanitizer or ThreadSanitizer, whose
/// runtimes own malloc (the interposer is compiled out there; the plain test pass counts).
int allocation_counter_available(void);

/// Starts counting this thread's allocations from zero.
void allocation_counter_start(void);
/// Stops counting and returns how many allocations this thread made since the start.
uint64_t allocation_counter_stop(void);

/// From now on, this thread's allocations also count into a process-wide total (for threads a
/// test does not run itself, such as a back-end's serving thread).
void allocation_counter_watch_this_thread(void);
/// Allocations made so far by every watched thread.
uint64_t allocation_counter_watched_total(void);

#endif
