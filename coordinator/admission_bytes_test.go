package coordinator_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// The sagas of the byte-budget tests: one step, which the "holder" agent
// answers, when one runs, once release is closed.
var holdDef = saga.Definition{Name: "hold", Subject: "hold", Steps: []saga.Step{{Name: "wait", Role: "holder"}}}

// holderAgent runs the agent of holdDef's step: it answers ok, with no
// output, once release is closed, and counts the commands it answered.
func holderAgent(t *testing.T, url string, release <-chan struct{}, answered *atomic.Int64) {
	t.Helper()
	testenv.Agent(t, url, participant.Options{Role: "holder", Steps: []agent.Step{{Saga: "hold", Name: "wait", Handler: agent.Handler{
		Execute: func(ctx context.Context, _ agent.Tx, _ *messages.Command) (messages.Context, error) {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			answered.Add(1)
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}}}})
}

// paddedContext is a context of about n bytes.
func paddedContext(n int) messages.Context {
	return messages.Context{}.MustSet("pad", strings.Repeat("p", n))
}

// startAnswer sends a start alone of a hold saga with ctx and returns the
// answer.
func startAnswer(t *testing.T, nc *nats.Conn, id string, ctx messages.Context) messages.StartResponse {
	t.Helper()
	var resp messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("hold"), messages.StartRequest{V: messages.Version, SagaID: id, Context: ctx}, &resp)
	return resp
}

func requireBusy(t *testing.T, resp messages.StartResponse, what string) {
	t.Helper()
	require.NotNil(t, resp.Error, "%s admitted", what)
	require.Equal(t, messages.CodeBusy, resp.Error.Code, "%s: %s", what, resp.Error.Message)
	require.Empty(t, resp.SagaID)
}

// TestAdmissionByteBudget runs a coordinator whose sagas in flight may
// hold 80,000 bytes, far fewer than its limit of sagas: two starts of
// 30 KB contexts are admitted, a third is answered busy, and small starts
// are still admitted beside them. A coordinator that counted only sagas
// held every context a start brought (a start-only client took one from
// 16 MB to 635 MB in 8 s, and on to an out-of-memory crash, again on
// every restart). Restarted with a budget the sagas recovered are over,
// it recovers every one and answers even a small start busy; once the
// sagas have ended, starts are admitted again.
func TestAdmissionByteBudget(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	const budget = 80_000
	opts := coordinator.Options{Definitions: []saga.Definition{holdDef}, MaxActive: 1000, MaxActiveBytes: budget}
	stop := runUntilStopped(t, url, opts)

	big := paddedContext(30_000)
	for _, id := range []string{"big-1", "big-2"} {
		resp := startAnswer(t, nc, id, big)
		require.Nil(t, resp.Error, "%s", id)
	}
	requireBusy(t, startAnswer(t, nc, "big-3", big), "a third start of 30 KB")
	requireBusy(t, startAnswer(t, nc, "", big), "a third start of 30 KB with no id")
	small := paddedContext(100)
	for _, id := range []string{"small-1", "small-2", "small-3"} {
		resp := startAnswer(t, nc, id, small)
		require.Nil(t, resp.Error, "%s", id)
	}
	require.Equal(t, 5, testenv.Summary(t, nc).Active)
	var status messages.StatusResponse
	testenv.Request(t, nc, messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: "big-3"}, &status)
	require.NotNil(t, status.Error, "big-3 was started")
	require.Equal(t, messages.CodeNotFound, status.Error.Code)

	// Restarted with half the budget: every saga recovered, none admitted.
	stop()
	opts.MaxActiveBytes = budget / 2
	logs := newLogSink()
	opts.Logger = slog.New(logs)
	stop = runUntilStopped(t, url, opts)
	defer func() { stop() }()
	require.Equal(t, 5, testenv.Summary(t, nc).Active, "sagas lost in recovery")
	require.Equal(t, 1, logs.count(slog.LevelWarn, "the sagas recovered are at or over the limit", ""))
	requireBusy(t, startAnswer(t, nc, "small-4", small), "a small start over the budget")

	release := make(chan struct{})
	var answered atomic.Int64
	holderAgent(t, url, release, &answered)
	close(release)
	for _, id := range []string{"big-1", "big-2", "small-1", "small-2", "small-3"} {
		testenv.WaitStatus(t, nc, id, saga.Completed)
	}
	require.Eventually(t, func() bool { return startAnswer(t, nc, "big-3", big).Error == nil },
		10*time.Second, 10*time.Millisecond, "a start is not admitted again once the sagas ended")
	testenv.WaitStatus(t, nc, "big-3", saga.Completed)
	require.GreaterOrEqual(t, answered.Load(), int64(6))
}

// TestStartManyWithinByteBudget sends eight starts of 30 KB contexts in
// one client.StartMany to a coordinator whose sagas in flight may hold
// 100,000 bytes: three are admitted, the others answered busy in the
// batch's answer, and StartMany sends them again until, as the agent
// ends sagas, every one is admitted.
func TestStartManyWithinByteBudget(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	runCoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{holdDef}, MaxActive: 1000, MaxActiveBytes: 100_000})
	release := make(chan struct{})
	var answered atomic.Int64
	holderAgent(t, url, release, &answered)

	// The client says at debug each time it sends busy starts again.
	logs := newLogSink()
	cl, err := client.New(testenv.Connect(t, url), client.Options{Logger: slog.New(logs)})
	require.NoError(t, err)
	starts := make([]client.Start, 8)
	for i := range starts {
		starts[i] = client.Start{Saga: "hold", Context: paddedContext(30_000)}
	}
	type result struct {
		started []client.Started
		errs    []error
	}
	done := make(chan result, 1)
	go func() {
		started, errs := cl.StartMany(t.Context(), starts, 1)
		done <- result{started, errs}
	}()
	// Held at the budget: three in flight, and the others sent again.
	resent := func() int { return logs.count(slog.LevelDebug, "coordinator busy; starting again after a backoff", "") }
	require.Eventually(t, func() bool { return resent() >= 2 && testenv.Summary(t, nc).Active == 3 },
		10*time.Second, 10*time.Millisecond, "the starts over the budget are not answered busy and sent again")
	require.Equal(t, 3, testenv.Summary(t, nc).Active)
	select {
	case <-done:
		t.Fatal("StartMany returned with sagas still held at the budget")
	default:
	}

	close(release)
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("StartMany did not return")
	}
	for i, err := range r.errs {
		require.NoError(t, err, "start %d", i)
		testenv.WaitStatus(t, nc, r.started[i].ID, saga.Completed)
	}
	require.GreaterOrEqual(t, answered.Load(), int64(8))
}
