package cli

import (
	"bufio"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
)

// tunedLimit is the soft memory limit [TuneGC] set, 0 when it set none.
var tunedLimit atomic.Int64

// MemoryLimit returns the memory the process may use, in bytes: the
// runtime's limit when GOMEMLIMIT (or debug.SetMemoryLimit) set one, else
// the cgroup's limit, else the machine's memory; 0 when it cannot tell.
// The soft limit of [TuneGC] is not counted: it is derived from this.
func MemoryLimit() int64 {
	if l := debug.SetMemoryLimit(-1); l > 0 && l < math.MaxInt64 && l != tunedLimit.Load() {
		return l
	}
	return hostMemory()
}

// hostMemory returns the cgroup's memory limit, else the machine's memory,
// in bytes; 0 when it cannot tell.
func hostMemory() int64 {
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
