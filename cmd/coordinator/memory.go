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
