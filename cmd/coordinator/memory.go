package main

import (
	"bufio"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/natsaga/natsaga/coordinator"
)

// sagaBudget is the memory budgeted per saga in flight: five times the
// 1,635 bytes BENCHMARKS.md measures with a two-key context, for larger
// contexts and histories.
const sagaBudget = 8 << 10

// defaultMaxActive sizes -max-active to memory: a quarter of the process's
// memory limit (GOMEMLIMIT, else the cgroup's limit, else the machine's
// memory) at sagaBudget a saga, and at least 1,000. Where none can be read
// it is coordinator.DefaultMaxActive.
func defaultMaxActive() int {
	mem := memoryLimit()
	if mem <= 0 {
		return coordinator.DefaultMaxActive
	}
	return int(max(mem/4/sagaBudget, 1000))
}

// memoryLimit returns the memory the process may use, in bytes, and 0 when
// it cannot tell.
func memoryLimit() int64 {
	if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 {
		return l
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if l, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && l > 0 {
			return l
		}
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// MemTotal:       16314748 kB
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
