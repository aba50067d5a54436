package client_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/tracing"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// idle is a saga type no agent serves: its sagas stay active.
var idle = saga.Definition{Name: "idle", Subject: "idle", Steps: []saga.Step{{Name: "wait", Role: "nobody"}}}

// TestListFollowsTheCursor lists more active sagas than a page holds: List
// follows the coordinator's cursor and returns each saga once, oldest
// first, or the first limit of them.
func TestListFollowsTheCursor(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{idle})
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := messages.MaxListPage + 5
	starts := make([]client.Start, n)
	for i := range starts {
		starts[i] = client.Start{Saga: "idle"}
	}
	started, errs := c.StartMany(ctx, starts, 0)
	for _, err := range errs {
		require.NoError(t, err)
	}
	for _, limit := range []int{0, 3, messages.MaxListPage + 2} {
		xs, err := c.List(ctx, "", limit)
		require.NoError(t, err)
		want := n
		if limit > 0 {
			want = limit
		}
		require.Equal(t, want, len(xs), "limit %d", limit)
		seen := map[string]bool{}
		for i, x := range xs {
			require.False(t, seen[x.ID], "saga %s listed twice", x.ID)
			seen[x.ID] = true
			if i > 0 {
				prev := xs[i-1]
				require.True(t, prev.StartedTick < x.StartedTick || (prev.StartedTick == x.StartedTick && prev.ID < x.ID), "oldest first")
			}
		}
	}
	all, err := c.List(ctx, saga.InProgress, 0)
	require.NoError(t, err)
	ids := map[string]bool{}
	for _, x := range all {
		ids[x.ID] = true
	}
	for _, s := range started {
		require.True(t, ids[s.ID], "saga %s not listed", s.ID)
	}
	_, err = c.List(ctx, "", -1)
	require.Error(t, err)
}

// TestStartWhileBusy starts a saga while the coordinator holds its limit
// of one saga in flight: the start is answered busy and sent again until
// its context ends, and the error says both.
func TestStartWhileBusy(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{idle}, MaxActive: 1})
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	_, err = c.Start(t.Context(), client.Start{Saga: "idle", ID: "first"})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err = c.Start(ctx, client.Start{Saga: "idle", ID: "second"})
	require.ErrorIs(t, err, client.ErrBusy)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, messages.CodeBusy, ce.Code)
	_, err = c.Status(t.Context(), "second")
	require.ErrorIs(t, err, client.ErrNotFound, "a busy start starts nothing")
}

// TestStartSpan starts a saga with a Tracer: the start is a client span
// named after the saga type, with the saga's id, and the request carries
// its context to whoever answers it (here a plain NATS responder).
func TestStartSpan(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	headers := make(chan nats.Header, 1)
	sub, err := nc.Subscribe(messages.StartSubject("greet"), func(m *nats.Msg) {
		headers <- m.Header
		data, _ := json.Marshal(messages.StartResponse{V: messages.Version, SagaID: "s-1", Status: "in_progress"})
		_ = m.Respond(data)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c, err := client.New(testenv.Connect(t, url), client.Options{Logger: testenv.Logger(t), Tracer: tp.Tracer("test")})
	require.NoError(t, err)
	got, err := c.Start(t.Context(), client.Start{Saga: "greet", ID: "s-1"})
	require.NoError(t, err)
	require.Equal(t, client.Started{ID: "s-1", Status: saga.InProgress}, got)

	spans := rec.Ended()
	require.Len(t, spans, 1)
	span := spans[0]
	require.Equal(t, "start greet", span.Name())
	require.Equal(t, trace.SpanKindClient, span.SpanKind())
	attrs := map[string]string{}
	for _, a := range span.Attributes() {
		attrs[string(a.Key)] = a.Value.AsString()
	}
	require.Equal(t, map[string]string{"natsaga.saga_id": "s-1", "natsaga.saga": "greet"}, attrs)

	h := <-headers
	carried := trace.SpanContextFromContext(tracing.Extract(context.Background(), h))
	require.Equal(t, span.SpanContext().TraceID(), carried.TraceID())
	require.Equal(t, span.SpanContext().SpanID(), carried.SpanID())
}
