package main

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// busyCoordinator runs a coordinator that admits one saga in flight, of
// the one-step type "ops", fills it with a saga no agent serves yet, and
// counts the start requests on the wire. It returns the server's URL, the
// first saga's id and the count.
func busyCoordinator(t *testing.T) (string, string, *atomic.Int32) {
	t.Helper()
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "reserve", Role: "ops"}}}
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{def}, MaxActive: 1})
	nc := testenv.Connect(t, url)
	first := testenv.Start(t, nc, "ops", nil)
	var starts atomic.Int32
	sub, err := nc.Subscribe(messages.StartSubject("ops"), func(*nats.Msg) { starts.Add(1) })
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return url, first, &starts
}

// TestStartBacksOffWhileBusy starts a saga with the operator tool while
// the coordinator holds its limit of one saga in flight: the tool is
// answered busy and sends the start again until an agent finishes the
// first saga, then prints the new saga's id and exits 0.
func TestStartBacksOffWhileBusy(t *testing.T) {
	url, first, starts := busyCoordinator(t)
	type result struct {
		code int
		out  string
	}
	done := make(chan result, 1)
	go func() {
		code, out := natsaga(t, url, "-json", "-timeout", "60s", "start", "ops", `{"order":"o-2"}`)
		done <- result{code, out}
	}()
	// The start is answered busy and sent again, and the tool waits.
	require.Eventually(t, func() bool { return starts.Load() >= 3 }, 10*time.Second, 10*time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("natsaga start returned while the coordinator was busy: %d %s", r.code, r.out)
	default:
	}

	ok := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	undo := func(context.Context, agent.Tx, *messages.Command) error { return nil }
	testenv.Agent(t, url, participant.Options{Role: "ops", Steps: []agent.Step{
		{Saga: "ops", Name: "reserve", Handler: agent.Handler{Execute: ok, Compensate: undo}}}})
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("natsaga start never got through")
	}
	require.Equal(t, 0, r.code, r.out)
	var resp messages.StartResponse
	require.NoError(t, json.Unmarshal([]byte(r.out), &resp), r.out)
	require.Nil(t, resp.Error)
	require.NotEqual(t, first, resp.SagaID)
	nc := testenv.Connect(t, url)
	testenv.WaitStatus(t, nc, first, saga.Completed)
	x := testenv.WaitStatus(t, nc, resp.SagaID, saga.Completed)
	order, err := x.Context.String("order")
	require.NoError(t, err)
	require.Equal(t, "o-2", order)
}

// TestStartStillBusyAtTimeout keeps the coordinator busy: the tool sends
// the start more than once, then prints the busy answer at -timeout and
// exits 1, and nothing was started.
func TestStartStillBusyAtTimeout(t *testing.T) {
	url, _, starts := busyCoordinator(t)
	code, out := natsaga(t, url, "-json", "-timeout", "500ms", "start", "ops")
	require.Equal(t, 1, code, out)
	var resp messages.StartResponse
	require.NoError(t, json.Unmarshal([]byte(out), &resp), out)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBusy, resp.Error.Code)
	require.GreaterOrEqual(t, starts.Load(), int32(2))
	s := testenv.Summary(t, testenv.Connect(t, url))
	require.Equal(t, 1, s.Active)
}
