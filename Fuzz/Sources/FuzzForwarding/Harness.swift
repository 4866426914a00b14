import VhostUserBackendFuzzing

/// One input: the first bytes of a front-end's shared memory, rings included (see
/// ForwardingFuzzHarness for the layout). The back-end must walk whatever is there — loops,
/// wild addresses, overflowing lengths — without touching memory outside the region.
func fuzzForwarding(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    harness.run(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}

// A global outside main.swift: initialized on first use, whichever `main` runs.
nonisolated(unsafe) private let harness: ForwardingFuzzHarness = {
    do { return try ForwardingFuzzHarness() } catch { fatalError("cannot set up the harness: \(error)") }
}()
