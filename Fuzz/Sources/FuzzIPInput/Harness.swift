import VirtioUserIPFuzzing

/// One input: Ethernet frames for VirtioUserIP's lwIP interface (see IPInputFuzzHarness for
/// the format). lwIP must take whatever arrives — truncated headers, overlapping fragments,
/// TCP segments in any state — without crashing the process.
func fuzzIPInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    harness.run(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}

// A global outside main.swift: initialized on first use, whichever `main` runs.
nonisolated(unsafe) private let harness: IPInputFuzzHarness = {
    do { return try IPInputFuzzHarness() } catch { fatalError("cannot set up the harness: \(error)") }
}()
