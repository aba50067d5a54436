package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/examples/vaccination"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/saga"
)

// TestFlagsRefused: flags that cannot run a campaign exit 2, saying why,
// before anything starts.
func TestFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"-agents-elsewhere"}, "vaxsim: -agents-elsewhere and -coordinator-elsewhere need -nats, the server they run on\n"},
		{[]string{"-coordinator-elsewhere"}, "vaxsim: -agents-elsewhere and -coordinator-elsewhere need -nats, the server they run on\n"},
		{[]string{"-copies", "9"}, "vaxsim: -patients 1 to 1000000, -ticks 1 to 100000, -stock not negative, -copies 1 to 8\n"},
		{[]string{"-patients", "1000000000000"}, "vaxsim: -patients 1 to 1000000, -ticks 1 to 100000, -stock not negative, -copies 1 to 8\n"},
		{[]string{"-ticks", "1000000000"}, "vaxsim: -patients 1 to 1000000, -ticks 1 to 100000, -stock not negative, -copies 1 to 8\n"},
		{[]string{"run"}, "vaxsim: unexpected arguments: [run]\n"},
		{[]string{"-nats", "nats://127.0.0.1:1", "-agents-elsewhere", "-stock", "5"},
			"vaxsim: -stock: of the agents vaxsim starts, and with -agents-elsewhere it starts none (give the depot its own: vaxagent depot -stock N)\n"},
		{[]string{"-nats", "nats://127.0.0.1:1", "-agents-elsewhere", "-copies", "2", "-stock", "5"},
			"vaxsim: -copies and -stock: of the agents vaxsim starts, and with -agents-elsewhere it starts none (give the depot its own: vaxagent depot -stock N)\n"},
		{[]string{"-outcomes", "/nonexistent/dir/log.jsonl"}, "vaxsim: -outcomes: open /nonexistent/dir/log.jsonl: no such file or directory\n"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, mainCode(tc.args, &stdout, &stderr), "%v", tc.args)
		require.Equal(t, tc.says, stderr.String(), "%v", tc.args)
		require.Empty(t, stdout.String())
	}
}

// TestHelp: -h prints the flags and exits 0.
func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, mainCode([]string{"-h"}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "-agents-elsewhere")
}

// TestAnotherCoordinatorSaysTheFlag: on a server whose coordinator is
// active already, vaxsim's own stands by; it exits 1 naming the flag that
// uses the other one, not only Run's option.
func TestAnotherCoordinatorSaysTheFlag(t *testing.T) {
	_, url := testenv.Server(t)
	defs, err := vaccination.Definitions()
	require.NoError(t, err)
	testenv.Coordinator(t, url, defs)
	readyWait = 500 * time.Millisecond
	t.Cleanup(func() { readyWait = 0 })
	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, mainCode([]string{"-nats", url}, &stdout, &stderr))
	require.Contains(t, stderr.String(), "another coordinator holds the lease on "+url)
	require.Contains(t, stderr.String(), "vaxsim: -coordinator-elsewhere drives the campaign with the coordinator that runs there\n")
	require.Empty(t, stdout.String())
}

// TestCountsSaid: the report's sagas by status, in the order of a saga's
// life, those of none left out.
func TestCountsSaid(t *testing.T) {
	require.Equal(t, "82 completed, 40 rolled_back", counts(map[saga.Status]int{saga.RolledBack: 40, saga.Completed: 82}))
	require.Equal(t, "1 in_progress, 2 timed_out, 3 failed", counts(map[saga.Status]int{saga.Failed: 3, saga.TimedOut: 2, saga.InProgress: 1, saga.Completed: 0}))
	require.Equal(t, "none", counts(nil))
}

// TestOutcomesWritten: the outcome log replaces what the file held, and
// its SHA-256 is the digest printed.
func TestOutcomesWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.jsonl")
	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte("an older, longer file\n"), 10_000), 0o644))
	var stdout, stderr bytes.Buffer
	require.Equal(t, 0, mainCode([]string{"-patients", "20", "-ticks", "3", "-outcomes", path}, &stdout, &stderr), stderr.String())
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Contains(t, stdout.String(), fmt.Sprintf("outcome log SHA-256: %x\n", sha256.Sum256(data)))
	require.NotContains(t, string(data), "older", "nothing of what it held")
}
