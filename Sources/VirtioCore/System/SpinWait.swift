import CVirtioShim

/// Polling-loop helpers.
public enum SpinWait {
    /// A spin-wait hint for the CPU (PAUSE on x86): call it in a poll loop that found no work,
    /// so the loop stops hammering cache lines the other side is writing.
    @inlinable
    public static func relax() {
        cvs_cpu_relax()
    }
}
