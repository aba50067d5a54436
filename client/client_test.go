package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// newSystem runs a coordinator of greetings and a greeter agent whose
// handler is h, and returns a client.
func newSystem(t *testing.T, h agent.Handler) *client.Client {
	t.Helper()
	_, url := testenv.Server(t)
	defs, err := saga.ParseFile([]byte(greetings))
	require.NoError(t, err)
	testenv.Coordinator(t, url, defs)
	testenv.Agent(t, url, participant.Options{Role: "greeter", Steps: []agent.Step{{Saga: "greet", Name: "say_hello", Handler: h}}})
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	return c
}

var rejecting = agent.Handler{
	Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
		return nil, agent.Reject("no greeting for %s", cmd.SagaID)
	},
	Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
}

func TestWatchListAndErrors(t *testing.T) {
	c := newSystem(t, rejecting)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	events, err := c.Watch(ctx, client.Watch{Saga: "greet", All: true})
	require.NoError(t, err)
	started, errs := c.StartMany(ctx, []client.Start{{Saga: "greet", ID: "a"}, {Saga: "greet", ID: "b"}, {Saga: "nope", ID: "c"}}, 2)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.False(t, started[0].Existed || started[1].Existed, "started by this call")
	require.ErrorIs(t, errs[2], client.ErrNotFound)
	// Started again, each answers the saga there, and says so.
	again, err := c.Start(ctx, client.Start{Saga: "greet", ID: "a", Context: messages.Context{}.MustSet("other", 1)})
	require.NoError(t, err)
	require.Equal(t, "a", again.ID)
	require.True(t, again.Existed)
	startedAgain, errsAgain := c.StartMany(ctx, []client.Start{{Saga: "greet", ID: "b"}}, 1)
	require.NoError(t, errsAgain[0])
	require.True(t, startedAgain[0].Existed)
	var ce *client.Error
	require.ErrorAs(t, errs[2], &ce)
	require.Equal(t, messages.StartBatchSubject, ce.Subject, "StartMany sends its starts in batches")

	// Each saga goes in_progress, compensating, rolled_back.
	got := map[string][]string{}
	for ev, err := range events {
		require.NoError(t, err)
		got[ev.SagaID] = append(got[ev.SagaID], ev.Status)
		if len(got["a"]) == 3 && len(got["b"]) == 3 {
			break
		}
	}
	want := []string{"in_progress", "compensating", "rolled_back"}
	require.Equal(t, map[string][]string{"a": want, "b": want}, got)

	x, err := c.Status(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, saga.RolledBack, x.Status)
	require.Equal(t, "step say_hello failed: no greeting for a", x.Error)
	active, err := c.List(ctx, "", 0)
	require.NoError(t, err)
	require.Empty(t, active)
	// Finished sagas come from the coordinator's bucket, the latest first
	// limited; a status that is none is refused.
	done, err := c.List(ctx, saga.RolledBack, 0)
	require.NoError(t, err)
	require.Len(t, done, 2)
	done, err = c.List(ctx, saga.RolledBack, 1)
	require.NoError(t, err)
	require.Len(t, done, 1)
	_, err = c.List(ctx, "sleeping", 0)
	require.ErrorIs(t, err, client.ErrBadRequest)
	_, err = c.Status(ctx, "bad.id")
	require.ErrorIs(t, err, client.ErrBadRequest)
	require.False(t, errors.Is(err, client.ErrNotFound))
	tick, err := c.CurrentTick(ctx)
	require.NoError(t, err)
	require.Zero(t, tick)
	// A status no event has is refused, not watched for ever.
	for _, status := range []string{"sleeping", "pending"} {
		_, err = c.Watch(ctx, client.Watch{Status: status})
		require.ErrorContains(t, err, fmt.Sprintf("no event has status %q", status))
		require.ErrorIs(t, err, client.ErrBadRequest)
	}
	_, err = c.Watch(ctx, client.Watch{Last: -1})
	require.ErrorIs(t, err, client.ErrBadRequest)
}

func TestRegisterThroughTheClient(t *testing.T) {
	c := newSystem(t, rejecting)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v2 := `{"roles":["greeter"],"sagas":[{"name":"greeting","subject":"greet","version":2,
		"steps":[{"name":"say_hello","role":"greeter","timeout_ticks":4}]}]}`
	reg, err := c.Register(ctx, []byte(v2))
	require.NoError(t, err)
	require.Equal(t, []messages.RegisteredSaga{{Name: "greeting", Version: 2, Latest: true}}, reg)
	_, err = c.Register(ctx, []byte(`{"roles":["greeter"],"sagas":[{"name":"greeting","subject":"greet","version":2,"steps":[{"name":"x","role":"greeter"}]}]}`))
	require.ErrorIs(t, err, client.ErrConflict)
	_, err = c.Register(ctx, []byte(`{"roles":[],"sagas":[]}`))
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
}

func TestWaitQuietGivesUpOnAnAgentThatBreaksItsWord(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stuck := agent.Handler{
		Execute: func(ctx context.Context, _ agent.Tx, _ *messages.Command) (messages.Context, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, errors.New("stopped")
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	c := newSystem(t, stuck)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Start(ctx, client.Start{Saga: "greet", ID: "s", Rank: 1})
	require.NoError(t, err)
	sum, err := c.WaitQuiet(ctx, client.Quiet{Limit: 200 * time.Millisecond})
	require.ErrorIs(t, err, client.ErrNotQuiet)
	var nq *client.NotQuietError
	require.ErrorAs(t, err, &nq)
	require.Equal(t, 1, sum.Due)
	require.Equal(t, sum, nq.Summary)
	// The error names the saga it waits for, its step and its attempt.
	require.Len(t, nq.Waiting, 1)
	require.Equal(t, saga.ID("s"), nq.Waiting[0].ID)
	require.Equal(t, "tick 0: 1 command due had no answer for 200ms; waiting for s (greeting, execute greet.say_hello, attempt 1)", nq.Error())
}

// TestWaitQuietBoundedWithNoCoordinator: with no coordinator to answer a
// summary (stopped, a standby not yet taken over), the wait still gives
// up at its bounds, Within or Limit, not once the client's patience for a
// coordinator restarting (a minute) has passed.
func TestWaitQuietBoundedWithNoCoordinator(t *testing.T) {
	_, url := testenv.Server(t)
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	for _, tc := range []struct {
		q    client.Quiet
		says string
	}{
		{client.Quiet{Within: 300 * time.Millisecond}, "tick 0: not quiet within 300ms; the coordinator answers no summary: "},
		{client.Quiet{Limit: 300 * time.Millisecond}, "tick 0: nothing answered for 300ms; the coordinator answers no summary: "},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := c.WaitQuiet(ctx, tc.q)
		require.ErrorIs(t, err, client.ErrNotQuiet)
		require.NoError(t, ctx.Err(), "given up at the wait's bound, before the context's")
		require.ErrorContains(t, err, tc.says)
		cancel()
	}
}

// TestWaitQuietSeesRankedSagasMove: a ranked saga's next command is due as
// the answer to its last comes, so the due count stays the same while the
// saga moves; the wait takes the answers applied as progress, and does not
// give up on an agent that answers each step within the limit though the
// saga takes longer.
func TestWaitQuietSeesRankedSagasMove(t *testing.T) {
	_, url := testenv.Server(t)
	const steps = 12
	def := saga.Definition{Name: "walk", Subject: "walk"}
	var handlers []agent.Step
	release := make(chan struct{})
	paced := agent.Handler{
		Execute: func(ctx context.Context, _ agent.Tx, _ *messages.Command) (messages.Context, error) {
			select {
			case <-release:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	for i := range steps {
		name := fmt.Sprintf("step%d", i)
		def.Steps = append(def.Steps, saga.Step{Name: name, Role: "walker"})
		handlers = append(handlers, agent.Step{Saga: "walk", Name: name, Handler: paced})
	}
	testenv.Coordinator(t, url, []saga.Definition{def})
	testenv.Agent(t, url, participant.Options{Role: "walker", Steps: handlers})
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err = c.Start(ctx, client.Start{Saga: "walk", ID: "w", Rank: 1})
	require.NoError(t, err)

	// One step answered every 200 ms: the saga takes 2.4 s, and the due
	// count is 1 all along; each answer comes well within the limit.
	const limit = time.Second
	go func() {
		pace := time.NewTicker(limit / 5)
		defer pace.Stop()
		for range steps {
			select {
			case <-pace.C:
			case <-ctx.Done():
				return
			}
			select {
			case release <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	sum, err := c.WaitQuiet(ctx, client.Quiet{Limit: limit})
	require.NoError(t, err)
	require.Zero(t, sum.Due)
	require.Equal(t, 1, sum.Completed)
	require.Equal(t, int64(steps), sum.Answered)
}

// TestRefusedBeforeSending: what the client can tell is bad itself is
// refused with an error wrapping ErrBadRequest, as the coordinator would
// answer it, and not sent: a saga type that breaks the identifier rule, a
// context over the server's payload limit, a negative limit.
func TestRefusedBeforeSending(t *testing.T) {
	c := newSystem(t, rejecting)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	huge := messages.Context{}.MustSet("pad", strings.Repeat("p", 2<<20))
	for _, s := range []client.Start{{Saga: "gr.eet"}, {Saga: ""}, {Saga: "greet", ID: "big", Context: huge}} {
		_, err := c.Start(ctx, s)
		require.ErrorIs(t, err, client.ErrBadRequest, "%.40v", s)
		_, errs := c.StartMany(ctx, []client.Start{s, {Saga: "greet", ID: "fine"}}, 1)
		require.ErrorIs(t, errs[0], client.ErrBadRequest, "%.40v", s)
		require.NoError(t, errs[1], "its neighbour starts")
	}
	_, err := c.Start(ctx, client.Start{Saga: "greet", ID: "big", Context: huge})
	require.ErrorContains(t, err, "over the server's payload limit")
	_, err = c.ListJSON(ctx, "", -1)
	require.ErrorIs(t, err, client.ErrBadRequest)
	_, err = c.Status(ctx, "big")
	require.ErrorIs(t, err, client.ErrNotFound, "nothing was sent")

	_, err = client.New(nil, client.Options{})
	require.EqualError(t, err, "client: no NATS connection (nil)", "said as it is made, not as a panic at its first request")
}

// TestStartManyBusyUntilTheEnd: a start answered busy until ctx ends gets
// an error wrapping ErrBusy and ctx's error, as Start's does.
// TestStartManyUnderASmallPayloadLimit: under a 64 KiB payload limit a
// batch holds at most 682 starts, so that its answer fits; StartMany
// splits 1,500 starts by it, and every one starts.
func TestStartManyUnderASmallPayloadLimit(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 65536\n")
	defs, err := saga.ParseFile([]byte(greetings))
	require.NoError(t, err)
	testenv.Coordinator(t, url, defs)
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	starts := make([]client.Start, 1500)
	for i := range starts {
		starts[i] = client.Start{Saga: "greet"}
	}
	started, errs := c.StartMany(t.Context(), starts, 0)
	for i, err := range errs {
		require.NoError(t, err, "start %d", i)
		require.NotEmpty(t, started[i].ID)
	}
	sum, err := c.Summary(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1500, sum.Active)
}

func TestStartManyBusyUntilTheEnd(t *testing.T) {
	_, url := testenv.Server(t)
	defs, err := saga.ParseFile([]byte(greetings))
	require.NoError(t, err)
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: defs, MaxActive: 1})
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The one saga in flight waits for tick 5, which never comes.
	_, err = c.Start(ctx, client.Start{Saga: "greet", ID: "later", Rank: 1, Tick: 5})
	require.NoError(t, err)

	short, stop := context.WithTimeout(ctx, time.Second)
	defer stop()
	_, errs := c.StartMany(short, []client.Start{{Saga: "greet", ID: "now"}}, 1)
	require.ErrorIs(t, errs[0], client.ErrBusy)
	require.ErrorIs(t, errs[0], context.DeadlineExceeded)
	short, stop = context.WithTimeout(ctx, time.Second)
	defer stop()
	_, err = c.Start(short, client.Start{Saga: "greet", ID: "now"})
	require.ErrorIs(t, err, client.ErrBusy, "as Start says it")
}
