package main

import (
	"bytes"
	"math"
	"runtime/debug"
	"strconv"
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

// TestDefaultMaxActiveBytesFollowsTheMemoryLimit: the default byte budget
// of the sagas in flight is a quarter of the memory limit, and never less
// than 1,000 sagas at 8 KiB.
func TestDefaultMaxActiveBytesFollowsTheMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })

	debug.SetMemoryLimit(1 << 30)
	require.Equal(t, int64(256<<20), defaultMaxActiveBytes(), "1 GiB / 4")
	debug.SetMemoryLimit(1 << 20)
	require.Equal(t, int64(1000*8<<10), defaultMaxActiveBytes())
	debug.SetMemoryLimit(math.MaxInt64)
	require.Positive(t, defaultMaxActiveBytes(), "without a limit: the cgroup's or the machine's memory")
}

// TestMaxActiveBytesFlag: -max-active-bytes takes a number of bytes, or a
// negative one for no limit (0 is refused: TestFlagsOutOfRange), and
// defaults to a quarter of the memory limit.
func TestMaxActiveBytesFlag(t *testing.T) {
	getenv := func(string) string { return "" }
	var out bytes.Buffer
	c, err := parseFlags([]string{"-definitions", "none"}, getenv, &out)
	require.NoError(t, err)
	require.Equal(t, defaultMaxActiveBytes(), c.maxActiveBytes)
	for _, v := range []int64{1 << 20, -1} {
		c, err := parseFlags([]string{"-definitions", "none", "-max-active-bytes", strconv.FormatInt(v, 10)}, getenv, &out)
		require.NoError(t, err)
		require.Equal(t, v, c.maxActiveBytes)
	}
	_, err = parseFlags([]string{"-max-active-bytes", "0"}, getenv, &out)
	require.ErrorContains(t, err, "-max-active-bytes 0")
}
