package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestStandbyTakesOver runs two coordinators on one bucket: the second
// stands by while the first holds the lease, takes over when the first
// dies without a word, and hands back at once after a clean stop.
func TestStandbyTakesOver(t *testing.T) {
	_, url := testenv.Server(t)
	ok := func(context.Context, *participant.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	undo := func(context.Context, *participant.Tx, *messages.Command) error { return nil }
	testenv.Agent(t, url, participant.Options{Role: "bank", Steps: []participant.Step{
		{Saga: "transfer", Name: "debit", Handler: participant.Handler{Execute: ok, Compensate: undo}},
		{Saga: "transfer", Name: "credit", Handler: participant.Handler{Execute: ok, Compensate: undo}}}})
	client := testenv.Connect(t, url)

	type running struct {
		c      *coordinator.Coordinator
		cancel context.CancelFunc
		done   chan error
	}
	run := func() (running, func()) {
		nc := testenv.Connect(t, url)
		c, err := coordinator.New(nc, coordinator.Options{Definitions: []saga.Definition{twoSteps}, LeaseTTL: time.Second})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		r := running{c: c, cancel: cancel, done: make(chan error, 1)}
		go func() { r.done <- c.Run(ctx) }()
		return r, nc.Close
	}
	ready := func(r running) func() bool {
		return func() bool {
			select {
			case <-r.c.Ready():
				return true
			default:
				return false
			}
		}
	}

	first, crashFirst := run()
	require.Eventually(t, ready(first), 10*time.Second, 10*time.Millisecond)
	second, _ := run()
	require.Never(t, ready(second), 1500*time.Millisecond, 50*time.Millisecond, "a standby must wait for the lease")
	// Both are healthy: one holds the lease, the other stands by.
	require.NoError(t, first.c.Health())
	require.True(t, first.c.Active())
	require.NoError(t, second.c.Health())
	require.False(t, second.c.Active())
	// NATS micro discovery finds both: the active one with the request
	// endpoints, the standby with none.
	require.Equal(t, map[string]int{"active": 6, "standby": 0}, coordinatorInfos(t, client, 2))
	id := testenv.Start(t, client, "transfer", nil)
	testenv.WaitStatus(t, client, id, saga.Completed)

	// The first dies without releasing its lease: the standby takes over
	// once the lease expires, and the first, cut off, stops.
	crashFirst()
	require.Eventually(t, ready(second), 10*time.Second, 10*time.Millisecond)
	require.Error(t, <-first.done)
	require.ErrorIs(t, first.c.Health(), coordinator.ErrNotReady)
	require.True(t, second.c.Active())
	first.cancel()
	id = testenv.Start(t, client, "transfer", nil)
	testenv.WaitStatus(t, client, id, saga.Completed)
	require.Equal(t, 2, testenv.Summary(t, client).Completed)

	// A clean stop releases the lease: a new coordinator takes over at
	// once, well within the lease's TTL.
	third, _ := run()
	require.Never(t, ready(third), 300*time.Millisecond, 20*time.Millisecond)
	second.cancel()
	require.NoError(t, <-second.done)
	require.Eventually(t, ready(third), 900*time.Millisecond, 5*time.Millisecond)
	id = testenv.Start(t, client, "transfer", nil)
	testenv.WaitStatus(t, client, id, saga.Completed)
	third.cancel()
	require.NoError(t, <-third.done)
}

// coordinatorInfos asks every coordinator for its micro INFO and returns
// the number of endpoints of each by its state, once n have answered.
func coordinatorInfos(t *testing.T, nc *nats.Conn, n int) map[string]int {
	t.Helper()
	subj, err := micro.ControlSubject(micro.InfoVerb, messages.CoordinatorService, "")
	require.NoError(t, err)
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	require.NoError(t, nc.PublishRequest(subj, inbox, nil))
	got := map[string]int{}
	for range n {
		m, err := sub.NextMsg(5 * time.Second)
		require.NoError(t, err, "answers so far: %v", got)
		var info micro.Info
		require.NoError(t, json.Unmarshal(m.Data, &info))
		got[info.Metadata["state"]] = len(info.Endpoints)
	}
	return got
}
