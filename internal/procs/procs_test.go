package procs_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
)

// TestProgramsServeAndStopCleanly runs every program as a process, reading
// the NATS URL from NATS_URL, waits until it serves, sends SIGTERM and
// checks that it drains and exits 0.
func TestProgramsServeAndStopCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every program")
	}
	bins, err := procs.Build(context.Background(), filepath.Join(t.TempDir(), "bin"), false, procs.Programs...)
	require.NoError(t, err)
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)

	var out testenv.SyncBuffer
	var started []*procs.Proc
	for _, name := range procs.Programs {
		p, err := procs.Start(name, bins[name], nil, []string{"NATS_URL=" + url}, &out)
		require.NoError(t, err)
		started = append(started, p)
		t.Cleanup(func() { p.Kill() })
	}

	// The coordinator answers summaries; every agent answers for stats.
	require.Eventually(t, func() bool {
		m, err := nc.Request(messages.SummarySubject, []byte("{}"), 200*time.Millisecond)
		return err == nil && json.Valid(m.Data)
	}, 20*time.Second, 20*time.Millisecond, "the coordinator never served:\n%s", &out)
	want := []string{"contractor", "government", "household", "insurer"}
	require.Eventually(t, func() bool {
		var roles []string
		inbox := nc.NewRespInbox()
		sub, err := nc.SubscribeSync(inbox)
		if err != nil {
			return false
		}
		defer sub.Unsubscribe()
		if nc.PublishRequest(messages.AgentStatsSubject, inbox, nil) != nil {
			return false
		}
		for {
			m, err := sub.NextMsg(200 * time.Millisecond)
			if err != nil {
				break
			}
			var s messages.AgentStats
			if json.Unmarshal(m.Data, &s) == nil {
				roles = append(roles, s.Role)
			}
		}
		slices.Sort(roles)
		return slices.Equal(roles, want)
	}, 20*time.Second, 20*time.Millisecond, "the agents never all served:\n%s", &out)

	for _, p := range started {
		require.NoError(t, p.Signal(syscall.SIGTERM))
	}
	for _, p := range started {
		select {
		case <-p.Done():
			require.NoError(t, p.Err(), "%s did not exit 0:\n%s", p.Name, &out)
		case <-time.After(15 * time.Second):
			t.Fatalf("%s did not stop within 15s of SIGTERM:\n%s", p.Name, &out)
		}
	}
	require.Contains(t, out.String(), "coordinator stopped cleanly")
	require.Contains(t, out.String(), "household-agent stopped cleanly")
}
