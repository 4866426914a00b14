import VhostUserBackendFuzzing

/// One input: see MessageDecoderFuzzHarness (in the package's fuzzing product).
func fuzzMessageDecoder(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    MessageDecoderFuzzHarness.run(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
