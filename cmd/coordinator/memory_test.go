package main

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDefaultMaxActiveFollowsTheMemoryLimit sets a memory limit, as
// GOMEMLIMIT does: the default admits a quarter of it at 8 KiB a saga, and
// never fewer than 1,000.
func TestDefaultMaxActiveFollowsTheMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })

	debug.SetMemoryLimit(1 << 30)
	require.Equal(t, 32768, defaultMaxActive(), "1 GiB / 4 / 8 KiB")
	debug.SetMemoryLimit(1 << 20)
	require.Equal(t, 1000, defaultMaxActive())
	debug.SetMemoryLimit(math.MaxInt64)
	require.Positive(t, defaultMaxActive(), "without a limit: the cgroup's or the machine's memory")
}
