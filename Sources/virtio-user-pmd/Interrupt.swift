#if canImport(Glibc)
import VirtioCore
import Glibc
#endif
import Synchronization

/// Set by SIGINT/SIGTERM so a run ends early with its summary, as testpmd does.
let interrupted = Atomic<Bool>(false)

func installInterruptHandlers() {
    signal(SIGINT) { _ in interrupted.store(true, ordering: .relaxed) }
    signal(SIGTERM) { _ in interrupted.store(true, ordering: .relaxed) }
}
