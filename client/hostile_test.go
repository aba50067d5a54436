package client_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	// No id: the span names the one the coordinator gave.
	got, err := c.Start(t.Context(), client.Start{Saga: "greet"})
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

// TestTickNotStoredIsSentAgain has the coordinator's bucket refuse the
// clock's write (its messages may be one byte at most): Tick's tick is
// answered busy, as not stored, and the coordinator's term ends. Tick sends
// it again until the bucket takes writes again and a coordinator serves:
// the clock then stands at the tick, applied once.
//
// Tick's own first request is the one answered busy: a tick sent again
// after a busy answer may reach the ending term, which drops it (Tick
// sends it again once its answer is overdue), or the next term, which
// applies it (that term's setup puts the streams' limits back, so it
// stores the clock whether or not the test has opened them yet).
func TestTickNotStoredIsSentAgain(t *testing.T) {
	_, nc, open := shutStores(t)
	ctx := t.Context()
	// Tick's answers come to an inbox of its own connection, which the
	// test reads too.
	const inbox = "tick-client"
	answers := make(chan *nats.Msg, 64)
	asub, err := nc.ChanSubscribe(inbox+".>", answers)
	require.NoError(t, err)
	defer func() { _ = asub.Unsubscribe() }()
	sent := make(chan *nats.Msg, 64)
	ssub, err := nc.ChanSubscribe(messages.TickSubject, sent)
	require.NoError(t, err)
	defer func() { _ = ssub.Unsubscribe() }()
	require.NoError(t, nc.Flush())
	tnc, err := nats.Connect(nc.ConnectedUrl(), nats.CustomInboxPrefix(inbox))
	require.NoError(t, err)
	t.Cleanup(tnc.Close)
	c, err := client.New(tnc, client.Options{Logger: testenv.Logger(t), RestartPatience: time.Minute})
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := c.Tick(ctx, 1)
		done <- err
	}()
	var first messages.TickAck
	select {
	case m := <-answers:
		require.NoError(t, json.Unmarshal(m.Data, &first), string(m.Data))
	case <-time.After(time.Minute):
		t.Fatal("the tick was not answered")
	}
	require.NotNil(t, first.Error)
	require.Equal(t, messages.CodeBusy, first.Error.Code)
	require.Contains(t, first.Error.Message, "tick 1 not stored")

	open()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("the tick was not applied once the bucket took writes again")
	}
	// Each request reached the test's subscription before its answer
	// reached Tick: every one sent is counted.
	require.GreaterOrEqual(t, len(sent), 2, "the tick answered busy was sent again")
	sum, err := c.Summary(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), sum.Tick)
}

// TestTickAnsweredBusyIsSentAgain answers a tick busy twice, as a
// coordinator whose store failed does (here a plain NATS responder plays
// it), then acknowledges it: Tick returns the acknowledgement, after three
// requests.
func TestTickAnsweredBusyIsSentAgain(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	var asked atomic.Int32
	_, err := nc.Subscribe(messages.TickSubject, func(m *nats.Msg) {
		ack := messages.TickAck{V: messages.Version, Tick: 7}
		if asked.Add(1) <= 2 {
			ack.Error = &messages.WireError{Code: messages.CodeBusy, Message: "busy: tick 7 not stored; send it again"}
		}
		data, err := json.Marshal(ack)
		if err == nil {
			_ = m.Respond(data)
		}
	})
	require.NoError(t, err)
	c, err := client.New(nc, client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ack, err := c.Tick(t.Context(), 7)
	require.NoError(t, err)
	require.Equal(t, int64(7), ack.Tick)
	require.Nil(t, ack.Error)
	require.Equal(t, int32(3), asked.Load())
}

// requireSentAgain runs send, a request on subject that the shut bucket
// keeps failing, opens the bucket once attempts of them are out, and
// requires send to succeed: the request was sent again until it was
// applied.
func requireSentAgain(t *testing.T, nc *nats.Conn, subject string, attempts int, open func(), send func() error) {
	t.Helper()
	sent, err := nc.SubscribeSync(subject)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- send() }()
	for range attempts {
		_, err := sent.NextMsgWithContext(t.Context())
		require.NoError(t, err)
	}
	open()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatalf("%s was not applied once the bucket took writes again", subject)
	}
}

// shutStores starts a coordinator of idle sagas whose saga log and bucket
// then take no write (their messages may be one byte at most), and returns
// a client, the connection, and a function that opens them again.
func shutStores(t *testing.T) (*client.Client, *nats.Conn, func()) {
	t.Helper()
	_, url := testenv.Server(t)
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{idle}})
	nc := testenv.Connect(t, url)
	c, err := client.New(nc, client.Options{Logger: testenv.Logger(t), RestartPatience: time.Minute})
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var open []jetstream.StreamConfig
	for _, name := range []string{messages.SagaLogStream, "KV_" + messages.SagaBucket} {
		st, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		cfg := st.CachedInfo().Config
		open = append(open, cfg)
		cfg.MaxMsgSize = 1
		_, err = js.UpdateStream(t.Context(), cfg)
		require.NoError(t, err)
	}
	return c, nc, func() {
		for _, cfg := range open {
			_, err := js.UpdateStream(t.Context(), cfg)
			require.NoError(t, err)
		}
	}
}

// TestStartNotStoredIsSentAgain has the coordinator's saga log refuse the
// saga's write: a start that names its saga is answered busy, as not
// stored, and Start sends it again until the log takes writes again and
// a coordinator serves: the saga then exists.
func TestStartNotStoredIsSentAgain(t *testing.T) {
	c, nc, open := shutStores(t)
	ctx := t.Context()
	var named messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("idle"), messages.StartRequest{V: messages.Version, SagaID: "named", Context: messages.Context{}}, &named)
	require.NotNil(t, named.Error)
	require.Equal(t, messages.CodeBusy, named.Error.Code)
	require.Contains(t, named.Error.Message, "start of saga named not stored")

	requireSentAgain(t, nc, messages.StartSubject("idle"), 1, open, func() error {
		_, err := c.Start(ctx, client.Start{Saga: "idle", ID: "named"})
		return err
	})
	x, err := c.Status(ctx, "named")
	require.NoError(t, err)
	require.Equal(t, saga.ID("named"), x.ID)
}

// TestStartWithoutIDNotStored: a start that names no saga, whose batch is
// not stored, is answered internal, not busy: sent again, it could start
// a second saga.
func TestStartWithoutIDNotStored(t *testing.T) {
	_, nc, _ := shutStores(t)
	var anonymous messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("idle"), messages.StartRequest{V: messages.Version, Context: messages.Context{}}, &anonymous)
	require.NotNil(t, anonymous.Error)
	require.Equal(t, messages.CodeInternal, anonymous.Error.Code, anonymous.Error.Message)
}
