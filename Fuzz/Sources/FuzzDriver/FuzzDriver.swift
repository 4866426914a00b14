#if canImport(Glibc)
import Glibc
#endif

/// One fuzz input: bytes and their count; returns 0 (libFuzzer's convention).
public typealias FuzzTarget = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: FuzzTarget) -> Int32

/// Runs libFuzzer's driver on `target` with the process's arguments, then exits with its
/// status. SwiftPM links an executable with its own `main` (the target's main.swift), so that
/// is where libFuzzer is started; each target still defines `LLVMFuzzerTestOneInput`, which
/// libFuzzer's (unused) `main` refers to.
public func runFuzzer(_ target: FuzzTarget) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, target))
}
