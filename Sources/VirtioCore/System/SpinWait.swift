import CVirtioShim

/// Polling-loop helpers.
@usableFromInline package enum SpinWait {
    /// A spin-wait hint for the CPU (PAUSE on x86): call it in a poll loop that found no work,
    /// so the loop stops hammering cache lines the other side is writing.
    @inlinable
    package static func relax() {
        cvs_cpu_relax()
    }
}
