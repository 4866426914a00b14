/// The symbol libFuzzer's own `main` refers to: linked in, though FuzzDriver starts the fuzzer.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    fuzzIPInput(start, count)
}
