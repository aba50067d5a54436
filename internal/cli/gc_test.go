package cli

import (
	"context"
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/metrics"
)

// gcPercent returns the collector's target in force.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// keepGC sets the collector's target and memory limit back when t ends:
// the tests of the package share the runtime.
func keepGC(t *testing.T) {
	p, l, tuned := gcPercent(), debug.SetMemoryLimit(-1), tunedLimit.Load()
	t.Cleanup(func() {
		debug.SetGCPercent(p)
		debug.SetMemoryLimit(l)
		tunedLimit.Store(tuned)
	})
}

func TestTuneGCSetsTheTargetUnlessGOGCDoes(t *testing.T) {
	keepGC(t)
	for _, tc := range []struct {
		gogc    string
		runtime int // what the runtime read from GOGC at start
		want    int
	}{
		{gogc: "", runtime: 100, want: GCPercent},
		{gogc: "50", runtime: 50, want: 50},
		{gogc: "100", runtime: 100, want: 100},
		{gogc: "off", runtime: -1, want: -1},
	} {
		debug.SetGCPercent(tc.runtime)
		got := TuneGC(func(k string) string {
			if k == "GOGC" {
				return tc.gogc
			}
			return ""
		})
		require.Equal(t, tc.want, got, "GOGC=%q", tc.gogc)
		require.Equal(t, tc.want, gcPercent(), "GOGC=%q", tc.gogc)
	}
}

func TestTuneGCSetsASoftLimitUnlessGOMEMLIMITDoes(t *testing.T) {
	keepGC(t)
	host := hostMemory()
	require.Positive(t, host, "the cgroup's limit or the machine's memory")

	debug.SetMemoryLimit(math.MaxInt64)
	TuneGC(func(string) string { return "" })
	require.Equal(t, host/4*3, debug.SetMemoryLimit(-1), "three quarters of the host's memory")
	require.Equal(t, host, MemoryLimit(), "the soft limit is not the process's memory")

	const limit = 3 << 30 // as GOMEMLIMIT=3GiB sets it at start
	debug.SetMemoryLimit(limit)
	tunedLimit.Store(0)
	TuneGC(func(k string) string {
		if k == "GOMEMLIMIT" {
			return "3GiB"
		}
		return ""
	})
	require.EqualValues(t, limit, debug.SetMemoryLimit(-1), "GOMEMLIMIT's limit is kept")
	require.EqualValues(t, limit, MemoryLimit())
}

// TestServeObservedTunesGCAndShowsIt runs a program as ServeObserved
// does, and reads the target in force from the Go collector's metrics,
// as an operator would on -metrics-addr.
func TestServeObservedTunesGCAndShowsIt(t *testing.T) {
	keepGC(t)
	t.Setenv("GOGC", "")
	debug.SetGCPercent(100)
	reg := metrics.NewRegistry()
	var seen int
	code := ServeObserved(io.Discard, "test", Observe{LogLevel: "error", LogFormat: "text"}, func(context.Context, *slog.Logger) error {
		seen = gcPercent()
		return nil
	})
	require.Equal(t, 0, code)
	require.Equal(t, GCPercent, seen)
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP go_gc_gogc_percent Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.
# TYPE go_gc_gogc_percent gauge
go_gc_gogc_percent 400
`), "go_gc_gogc_percent"))
}
