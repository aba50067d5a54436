package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary play the child processes, as the bench
// binary does.
func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(childMain(role, os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"-inflight", "1, 64", "-agents", "1,2,4", "-modes", "natsaga", "-latency", "5ms"}, &bytes.Buffer{})
	require.NoError(t, err)
	require.Equal(t, []int{1, 64}, c.inflight)
	require.Equal(t, []int{1, 2, 4}, c.agents)
	require.Equal(t, []string{modeNatsaga}, c.modes)
	for _, bad := range [][]string{
		{"-inflight", "0"}, {"-inflight", "x"}, {"-agents", "0"}, {"-modes", "kafka"},
		{"-duration", "0s"}, {"-concurrency", "0"}, {"-runs", "0"}, {"extra"},
		// Beyond what the machine can run: refused before a process starts.
		{"-agents", "1000"}, {"-inflight", "100000000"}, {"-latency", "1000000h"}, {"-runs", "99999999999"},
		{"-hold", "99999999999"}, {"-concurrency", "100000"}, {"-duration", "1000h"},
	} {
		_, err := parseFlags(bad, &bytes.Buffer{})
		require.Error(t, err, "%v", bad)
	}
}

// TestBenchmarkBothModes runs a short benchmark of both modes with real
// child processes and checks the JSON figures.
func TestBenchmarkBothModes(t *testing.T) {
	lines := runBench(t, "-inflight", "8", "-duration", "700ms", "-warmup", "300ms", "-concurrency", "4",
		"-baseline-workers", "8", "-json")
	require.Len(t, lines, 1)
	var r map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &r))
	for _, k := range []string{"mode", "inflight", "sagas_per_s", "p50_ms", "p99_ms", "baseline_sagas_per_s", "ratio",
		"cpu_s_per_1k_sagas", "coordinator_bytes_per_saga"} {
		require.Contains(t, r, k)
	}
	require.Equal(t, "natsaga", r["mode"])
	require.Equal(t, 8.0, r["inflight"])
	require.Positive(t, r["sagas_per_s"])
	require.Positive(t, r["baseline_sagas_per_s"])
	require.Positive(t, r["ratio"])
	require.Positive(t, r["cpu_s_per_1k_sagas"])
	require.Zero(t, r["errors"])
	// A saga stores at most 10 messages (2 saga writes, 3 commands, 3
	// barrier records that are also the replies, 2 events), the baseline
	// 11. Its start, commands, records and events share messages with
	// other sagas' (the saga log, command batches, the record log's group
	// commits, event batches), so natsaga stores fewer, and never fewer
	// than 1: its end, in the bucket. The benchmark's steps write no state.
	// The sagas in flight at the window's edges blur the count: at most 8
	// sagas' messages over the sagas the window saw complete, so a slow
	// machine, which completes few, widens the margin.
	completed := r["completed"].(float64)
	require.Positive(t, completed)
	stored := r["stored_msgs_per_saga"].(float64)
	require.GreaterOrEqual(t, stored, 1-edgeBlur(1, completed))
	require.LessOrEqual(t, stored, 10+edgeBlur(10, completed))
	// By kind: the saga's end in the bucket, its start in the saga log,
	// and at most its 3 records, 3 commands and 2 events.
	kinds, ok := r["stored_msgs_per_saga_by_kind"].(map[string]any)
	require.True(t, ok, "stored messages by kind")
	require.InDelta(t, 1, kinds["bucket"], edgeBlur(1, completed))
	require.Positive(t, kinds["sagas"])
	require.LessOrEqual(t, kinds["sagas"], 1+edgeBlur(1, completed))
	require.Positive(t, kinds["records"])
	require.LessOrEqual(t, kinds["records"], 3+edgeBlur(3, completed))
	require.Zero(t, kinds["state"])
	require.LessOrEqual(t, kinds["commands"], 3+edgeBlur(3, completed))
	require.LessOrEqual(t, kinds["events"], 2+edgeBlur(2, completed))
	baseline := r["baseline_sagas_per_s"].(float64) * r["window_s"].(float64)
	require.InDelta(t, 11, r["baseline_stored_msgs_per_saga"], edgeBlur(11, baseline))
}

// edgeBlur is the margin of a count of perSaga messages per saga measured
// over a window in which completed sagas finished with 8 in flight: 1.5,
// plus the 8 sagas' messages spread over the completed ones.
func edgeBlur(perSaga, completed float64) float64 {
	return 1.5 + perSaga*8/max(completed, 1)
}

// TestHoldMeasuresHeapAndRecovery holds sagas in flight, then has a new
// coordinator take them over, and checks that it reports both figures and
// lost none of the sagas (it fails otherwise).
func TestHoldMeasuresHeapAndRecovery(t *testing.T) {
	lines := runBench(t, "-modes", "natsaga", "-inflight", "1", "-duration", "300ms", "-warmup", "100ms",
		"-hold", "300", "-json")
	require.Len(t, lines, 2)
	var h holdResult
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &h))
	require.Equal(t, "natsaga-hold", h.Mode)
	require.Equal(t, 300, h.Held, "every saga started is held, waiting on its first step")
	require.Positive(t, h.CoordBytesPerSaga)
	require.Positive(t, h.RecoverS)
}

// runBench runs the benchmark command with args, requires it to succeed,
// and returns the lines it printed. It skips the test with -short: the
// command starts processes.
func runBench(t *testing.T, args ...string) []string {
	t.Helper()
	if testing.Short() {
		t.Skip("starts processes")
	}
	var stdout, stderr bytes.Buffer
	code := mainCode(args, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	t.Log(stdout.String())
	return strings.Split(strings.TrimSpace(stdout.String()), "\n")
}
