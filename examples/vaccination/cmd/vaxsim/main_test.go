package main

import (
	"bytes"
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
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, mainCode(tc.args, &stdout, &stderr), "%v", tc.args)
		require.Equal(t, tc.says, stderr.String(), "%v", tc.args)
		require.Empty(t, stdout.String())
	}
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
