import FuzzDriver

runFuzzer { fuzzMessageDecoder($0, $1) }
