package outage_test

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
)

// TestStoppedCoordinatorTakesNoRequests stops the active coordinator's
// process (SIGSTOP, as a paused machine would) and lets its standby take
// over. The stopped process keeps its subscriptions, and the server keeps
// the process for minutes; yet every request is answered at the first
// attempt by the coordinator that took over. Woken, the stopped one ends
// its term, and every request is still answered.
func TestStoppedCoordinatorTakesNoRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the coordinator and waits out a takeover")
	}
	bins, err := procs.Build(context.Background(), filepath.Join(t.TempDir(), "bin"), false, "coordinator")
	require.NoError(t, err)
	ns, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	url := ns.ClientURL()

	var out testenv.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(out.String())
		}
	})
	start := func() *procs.Proc {
		p, err := procs.Start("coordinator", bins["coordinator"], []string{"-lease-ttl", "1s", "-log-level", "info"},
			[]string{"NATS_URL=" + url}, &out)
		require.NoError(t, err)
		t.Cleanup(p.Kill)
		return p
	}
	logged := func(msg string, n int) func() bool {
		return func() bool { return strings.Count(out.String(), msg) >= n }
	}
	nc := testenv.Connect(t, url)
	answered := func(n int) {
		t.Helper()
		for i := range n {
			_, err := nc.Request(messages.SummarySubject, nil, time.Second)
			require.NoError(t, err, "request %d of %d", i+1, n)
		}
	}

	active := start()
	require.Eventually(t, logged("coordinator running", 1), time.Minute, 10*time.Millisecond, "the first coordinator never ran")
	start()
	require.Eventually(t, logged("standing by", 1), time.Minute, 10*time.Millisecond, "the second coordinator never stood by")
	answered(5)

	require.NoError(t, active.Signal(syscall.SIGSTOP))
	t.Cleanup(func() { _ = active.Signal(syscall.SIGCONT) })
	require.Eventually(t, logged("coordinator running", 2), time.Minute, 10*time.Millisecond, "the standby never took over")
	answered(20)

	require.NoError(t, active.Signal(syscall.SIGCONT))
	require.Eventually(t, logged("coordinator term ended", 1), time.Minute, 10*time.Millisecond, "the woken coordinator's term never ended")
	answered(20)
}
