import CVirtioShim

/// Polling-loop helpers.
@usableFromInline package enum SpinWait {
    /// A spin-wait hint for the CPU (PAUSE on x86): call it in a poll loop that found no work,
    /// so the loop stops hammering cache lines the other side is writing.
    @inlinable
    package static func relax() {
        cvs_cpu_relax()
    }

    /// `times` spin-wait hints in a row: a longer back-off, for a wait that cannot end sooner
    /// (a full ring frees in the other side's bursts).
    @inlinable
    package static func relax(times: Int) {
        for _ in 0..<times { cvs_cpu_relax() }
    }
}
