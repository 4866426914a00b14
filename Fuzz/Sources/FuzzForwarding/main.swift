import FuzzDriver

runFuzzer { fuzzForwarding($0, $1) }
