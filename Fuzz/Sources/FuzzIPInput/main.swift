import FuzzDriver

runFuzzer { fuzzIPInput($0, $1) }
