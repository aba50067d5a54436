package main

import (
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/cli"
)

// sagaBudget is the memory budgeted per saga in flight: five times the
// 1,635 bytes BENCHMARKS.md measures with a two-key context, for larger
// contexts and histories.
const sagaBudget = 8 << 10

// defaultMaxActive sizes -max-active to memory: a quarter of the process's
// memory limit (GOMEMLIMIT, else the cgroup's limit, else the machine's
// memory: [cli.MemoryLimit]) at sagaBudget a saga, and at least 1,000.
// Where none can be read it is coordinator.DefaultMaxActive.
func defaultMaxActive() int {
	mem := cli.MemoryLimit()
	if mem <= 0 {
		return coordinator.DefaultMaxActive
	}
	return int(max(mem/4/sagaBudget, 1000))
}

// defaultMaxActiveBytes sizes -max-active-bytes to memory: a quarter of
// the process's memory limit, as defaultMaxActive reads it, and at least
// what 1,000 sagas hold at sagaBudget. Where none can be read it is
// coordinator.DefaultMaxActiveBytes. The bytes counted are the sagas'
// contexts, outputs and histories as encoded; a black-box probe's heap
// grew by about 1.5 times the contexts its starts brought, so a quarter
// counted leaves the rest of the limit to the count of sagas' quarter,
// to what decoding takes over the encoded bytes, and to the garbage
// collector.
func defaultMaxActiveBytes() int64 {
	mem := cli.MemoryLimit()
	if mem <= 0 {
		return coordinator.DefaultMaxActiveBytes
	}
	return max(mem/4, 1000*sagaBudget)
}
