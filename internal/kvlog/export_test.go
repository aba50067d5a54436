package kvlog

// ScanTo exports scanTo to the tests.
var ScanTo = scanTo
