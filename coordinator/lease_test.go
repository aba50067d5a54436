package coordinator_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// standbyLogger returns a logger that signals on the channel each time its
// coordinator stands by for the lease.
func standbyLogger() (*slog.Logger, <-chan struct{}) {
	ch := make(chan struct{}, 1)
	return slog.New(signalHandler{msg: "standing by", ch: ch}), ch
}

// signalHandler sends on ch when a record's message starts with msg.
type signalHandler struct {
	msg string
	ch  chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h signalHandler) WithGroup(string) slog.Handler            { return h }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.msg) {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// receive waits for ch, or fails the test after a generous timeout.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// TestStandbyTakesOver runs two coordinators on one bucket: the second
// stands by while the first holds the lease, takes over when the first
// dies without a word, and hands over on a clean stop by releasing the
// lease. It waits on what the coordinators and the lease key say, not on
// time windows.
func TestStandbyTakesOver(t *testing.T) {
	_, url := testenv.Server(t)
	bankAgent(t, url)
	client := testenv.Connect(t, url)

	// Every deletion of the lease key: a clean stop releases it so.
	released := make(chan struct{}, 8)
	sub, err := client.Subscribe(messages.BucketSubject(messages.LeaseKey), func(m *nats.Msg) {
		if m.Header.Get("KV-Operation") == "DEL" {
			released <- struct{}{}
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, client.Flush())

	type running struct {
		c      *coordinator.Coordinator
		cancel context.CancelFunc
		done   chan error
	}
	run := func(log *slog.Logger) (running, func()) {
		nc := testenv.Connect(t, url)
		c, err := coordinator.New(nc, coordinator.Options{Definitions: []saga.Definition{twoSteps}, LeaseTTL: time.Second, Logger: log})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		r := running{c: c, cancel: cancel, done: make(chan error, 1)}
		go func() { r.done <- c.Run(ctx) }()
		return r, nc.Close
	}
	ready := func(r running) bool {
		select {
		case <-r.c.Ready():
			return true
		default:
			return false
		}
	}

	first, crashFirst := run(nil)
	receive(t, first.c.Ready(), "the first coordinator")
	log, standing := standbyLogger()
	second, _ := run(log)
	receive(t, standing, "the second coordinator to stand by")
	require.False(t, ready(second), "a standby must wait for the lease")
	// Both are healthy: one holds the lease, the other stands by.
	require.NoError(t, first.c.Health())
	require.True(t, first.c.Active())
	require.NoError(t, second.c.Health())
	require.False(t, second.c.Active())
	// NATS micro discovery finds both: the active one with the request
	// endpoints, the standby with none.
	require.Equal(t, map[string]int{"active": 9, "standby": 0}, coordinatorInfos(t, client, 2))
	id := testenv.Start(t, client, "transfer", nil)
	testenv.WaitStatus(t, client, id, saga.Completed)
	require.False(t, ready(second), "a standby serves nothing while the lease is held")

	// The first dies without releasing its lease: the standby takes over
	// once the lease expires, and the first, cut off, stops.
	crashFirst()
	receive(t, second.c.Ready(), "the standby to take over")
	require.Error(t, receive(t, first.done, "the first coordinator to stop"))
	require.ErrorIs(t, first.c.Health(), coordinator.ErrNotReady)
	require.True(t, second.c.Active())
	first.cancel()
	require.Empty(t, released, "a crash releases nothing")
	id = testenv.Start(t, client, "transfer", nil)
	testenv.WaitStatus(t, client, id, saga.Completed)
	require.Equal(t, 2, testenv.Summary(t, client).Completed)

	// A clean stop releases the lease, and the next standby takes it.
	log, standing = standbyLogger()
	third, _ := run(log)
	receive(t, standing, "the third coordinator to stand by")
	require.False(t, ready(third))
	second.cancel()
	require.NoError(t, receive(t, second.done, "the second coordinator to stop"))
	receive(t, released, "the lease to be released")
	receive(t, third.c.Ready(), "the third coordinator to take over")
	id = testenv.Start(t, client, "transfer", nil)
	testenv.WaitStatus(t, client, id, saga.Completed)
	third.cancel()
	require.NoError(t, receive(t, third.done, "the third coordinator to stop"))
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

// TestLeaseRenewalStoredLateIsKept stores, behind a coordinator's back,
// the renewal of its lease it would have made had a renewal's
// acknowledgement come too late: its next renewal, expecting the revision
// before, is refused. The lease still names it, so it keeps its term and
// renews on from the revision it finds, and never stands by.
func TestLeaseRenewalStoredLateIsKept(t *testing.T) {
	_, url := testenv.Server(t)
	client := testenv.Connect(t, url)
	log, standing := standbyLogger()
	t.Cleanup(runUntilStopped(t, url, coordinator.Options{
		Definitions: []saga.Definition{twoSteps}, LeaseTTL: time.Second, Logger: log}))

	js, err := jetstream.New(client)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), messages.SagaBucket)
	require.NoError(t, err)
	renewals := make(chan uint64, 16)
	sub, err := client.Subscribe(messages.BucketSubject(messages.LeaseKey), func(m *nats.Msg) {
		if seq, err := strconv.ParseUint(m.Header.Get(jetstream.ExpectedLastSubjSeqHeader), 10, 64); err == nil {
			renewals <- seq
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, client.Flush())

	// The lease as last stored, stored again: the coordinator may renew
	// between the read and the write, and then it is read again.
	var e jetstream.KeyValueEntry
	var late uint64
	require.Eventually(t, func() bool {
		if e, err = kv.Get(context.Background(), messages.LeaseKey); err != nil {
			return false
		}
		late, err = kv.Update(context.Background(), messages.LeaseKey, e.Value(), e.Revision())
		return err == nil
	}, 10*time.Second, time.Millisecond, "the lease could not be stored behind the coordinator's back")
	// The coordinator's renewals go on from the revision stored late: two
	// of them, and it never stands by (a standby's attempts to take the
	// lease expect no revision at all).
	for n := 0; n < 2; {
		select {
		case seq := <-renewals:
			if seq >= late {
				n++
			}
		case <-standing:
			t.Fatal("the coordinator stood by: it took its own renewal for another coordinator's")
		case <-time.After(10 * time.Second):
			t.Fatal("timed out waiting for the renewals after the one stored late")
		}
	}
	got, err := kv.Get(context.Background(), messages.LeaseKey)
	require.NoError(t, err)
	require.Equal(t, e.Value(), got.Value(), "the lease names the same coordinator")
}

// TestStalledCoordinatorSendsNothingAfterItsLease holds a coordinator
// still right after it took the lease, as a process stopped (SIGSTOP, a
// machine that stood still) would be, longer than the lease: a standby
// takes over. Let go, the stalled coordinator must not recover, resend
// commands and serve beside the one that holds the lease now, before its
// first renewal finds the lease gone: its term ends at once.
func TestStalledCoordinatorSendsNothingAfterItsLease(t *testing.T) {
	_, url := testenv.Server(t)
	bankAgent(t, url)

	start := func(log *slog.Logger, hook func()) *coordinator.Coordinator {
		nc := testenv.Connect(t, url)
		c, err := coordinator.New(nc, coordinator.Options{Definitions: []saga.Definition{twoSteps}, LeaseTTL: time.Second, Logger: log})
		require.NoError(t, err)
		if hook != nil {
			coordinator.SetAfterAcquire(c, hook)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			<-done
			nc.Close()
		})
		return c
	}

	acquired, letGo := make(chan struct{}), make(chan struct{})
	var once sync.Once
	ended := make(chan struct{}, 1)
	stalled := start(slog.New(signalHandler{msg: "coordinator term ended", ch: ended}), func() {
		once.Do(func() {
			close(acquired)
			<-letGo
		})
	})
	receive(t, acquired, "the first coordinator to take the lease")
	// The stalled coordinator renews nothing: the lease runs out and the
	// standby takes over.
	standby := start(nil, nil)
	receive(t, standby.Ready(), "the standby to take over")
	close(letGo)
	receive(t, ended, "the stalled coordinator's term to end")
	select {
	case <-stalled.Ready():
		t.Fatal("a coordinator whose lease ran out while it stood still recovered and served beside the one holding the lease")
	default:
	}
	require.True(t, standby.Active())
}

// bankAgent runs an agent of role "bank" that answers both steps of
// twoSteps ok, and undoes nothing.
func bankAgent(t *testing.T, url string) {
	ok := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	undo := func(context.Context, agent.Tx, *messages.Command) error { return nil }
	testenv.Agent(t, url, participant.Options{Role: "bank", Steps: []agent.Step{
		{Saga: "transfer", Name: "debit", Handler: agent.Handler{Execute: ok, Compensate: undo}},
		{Saga: "transfer", Name: "credit", Handler: agent.Handler{Execute: ok, Compensate: undo}}}})
}
