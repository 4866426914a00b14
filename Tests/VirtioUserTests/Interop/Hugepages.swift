import Foundation
import XCTest

/// Reserves at least `count` 2 MiB hugepages for the test (Scripts/hugepages.sh) and gives the
/// previous reservation back afterwards.
func reserveHugepages(_ count: Int, for testCase: XCTestCase) throws {
    let knob = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    let before = try String(contentsOfFile: knob, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    let result = try runProgram(repositoryRoot.appendingPathComponent("Scripts/hugepages.sh").path, [String(count)])
    guard result.status == 0 else {
        throw TestPMDError("could not reserve \(count) hugepages: \(result.errors)")
    }
    testCase.addTeardownBlock {
        try? before.write(toFile: knob, atomically: false, encoding: .utf8)
    }
}

/// Free 2 MiB hugepages right now.
func freeHugepages() -> Int {
    let text = (try? String(contentsOfFile: "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", encoding: .utf8)) ?? "0"
    return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
}
