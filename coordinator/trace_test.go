package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/tracing"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// attr returns the value of attribute key of s, "" when it has none.
func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if kv.Key == attribute.Key(key) {
			return kv.Value.Emit()
		}
	}
	return ""
}

// tracedTransfers runs a coordinator of twoSteps and a bank agent whose
// credit step always rejects, each recording its spans apart, as two
// processes would, and returns the server's URL and the two recorders.
func tracedTransfers(t *testing.T) (url string, coRec, agRec *tracetest.SpanRecorder) {
	t.Helper()
	_, url = testenv.Server(t)
	coRec, agRec = tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()
	coTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(coRec))
	agTP := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(agRec))

	co, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: []saga.Definition{twoSteps}, TracerProvider: coTP})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	<-co.Ready()
	ok := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	undo := func(context.Context, agent.Tx, *messages.Command) error { return nil }
	no := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
		return nil, agent.Reject("account closed")
	}
	testenv.Agent(t, url, participant.Options{Role: "bank", TracerProvider: agTP, Steps: []agent.Step{
		{Saga: "transfer", Name: "debit", Handler: agent.Handler{Execute: ok, Compensate: undo}},
		{Saga: "transfer", Name: "credit", Handler: agent.Handler{Execute: no, Compensate: undo}}}})
	return url, coRec, agRec
}

// tracedRequest sends req on subject with the span context of ctx in its
// headers, and decodes the answer into resp.
func tracedRequest(t *testing.T, nc *nats.Conn, ctx context.Context, subject string, req, resp any) {
	t.Helper()
	data, err := json.Marshal(req)
	require.NoError(t, err)
	m := nats.NewMsg(subject)
	m.Data = data
	tracing.Inject(ctx, m)
	require.NotEmpty(t, m.Header.Get("traceparent"))
	ans, err := nc.RequestMsg(m, 5*time.Second)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(ans.Data, resp))
}

// TestBatchedStartsAreATraceEach starts three sagas in one batch request
// from a client span: each saga's span is the root of a trace of its own,
// linked to the client span, and its commands' spans and the agent's work
// on them are in that trace, not the batch's.
func TestBatchedStartsAreATraceEach(t *testing.T) {
	url, coRec, agRec := tracedTransfers(t)
	cctx, client := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "client")
	nc := testenv.Connect(t, url)
	batch := messages.StartBatch{V: messages.Version}
	for range 3 {
		batch.Starts = append(batch.Starts, messages.BatchedStart{Saga: twoSteps.Name, Context: messages.Context{}})
	}
	var resp messages.StartBatchResponse
	tracedRequest(t, nc, cctx, messages.StartBatchSubject, batch, &resp)
	require.Nil(t, resp.Error)
	require.Len(t, resp.Results, 3)
	client.End()
	for _, r := range resp.Results {
		require.Nil(t, r.Error)
		testenv.WaitStatus(t, nc, r.SagaID, saga.RolledBack)
	}

	// Each saga: its span, three command spans; the agent: three spans.
	require.Eventually(t, func() bool { return len(coRec.Ended()) == 3*4 && len(agRec.Ended()) == 3*3 },
		10*time.Second, 10*time.Millisecond, "coordinator spans %d, agent spans %d", len(coRec.Ended()), len(agRec.Ended()))
	traces := map[trace.TraceID]string{} // the saga id of each trace
	for _, s := range coRec.Ended() {
		if s.Name() != "saga transfer" {
			continue
		}
		require.False(t, s.Parent().IsValid(), "a saga's span is a root")
		require.Len(t, s.Links(), 1)
		require.Equal(t, client.SpanContext().TraceID(), s.Links()[0].SpanContext.TraceID())
		require.Equal(t, client.SpanContext().SpanID(), s.Links()[0].SpanContext.SpanID())
		require.NotContains(t, traces, s.SpanContext().TraceID(), "two sagas in one trace")
		traces[s.SpanContext().TraceID()] = attr(s, "natsaga.saga_id")
	}
	require.Len(t, traces, 3)
	for _, s := range append(coRec.Ended(), agRec.Ended()...) {
		id, ok := traces[s.SpanContext().TraceID()]
		require.True(t, ok, "span %s outside the sagas' traces", s.Name())
		if got := attr(s, "natsaga.saga_id"); got != "" {
			require.Equal(t, id, got, "span %s in another saga's trace", s.Name())
		}
	}
}

// TestOneSagaIsOneTrace starts a saga from a client span, through a
// coordinator and an agent that record their spans apart, as two
// processes would: the saga's span is the client span's child, each
// command's span (the failing credit's and the debit's compensation
// included) the saga span's child, and the agent's work on each command
// the child of that command's span, all in the client's trace.
func TestOneSagaIsOneTrace(t *testing.T) {
	url, coRec, agRec := tracedTransfers(t)

	// The client's span, whose context the start request carries.
	clientTP := sdktrace.NewTracerProvider()
	cctx, client := clientTP.Tracer("test").Start(context.Background(), "client")
	nc := testenv.Connect(t, url)
	var resp messages.StartResponse
	tracedRequest(t, nc, cctx, messages.StartSubject(twoSteps.Subject), messages.StartRequest{V: messages.Version, Context: messages.Context{}}, &resp)
	require.Nil(t, resp.Error)
	client.End()
	testenv.WaitStatus(t, nc, resp.SagaID, saga.RolledBack)

	require.Eventually(t, func() bool { return len(coRec.Ended()) == 4 && len(agRec.Ended()) == 3 },
		10*time.Second, 10*time.Millisecond, "coordinator spans %d, agent spans %d", len(coRec.Ended()), len(agRec.Ended()))
	traceID := client.SpanContext().TraceID()
	byName := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range coRec.Ended() {
		require.Equal(t, traceID, s.SpanContext().TraceID(), s.Name())
		byName[s.Name()] = s
	}
	sagaSpan := byName["saga transfer"]
	require.NotNil(t, sagaSpan, "names: %v", byName)
	require.Equal(t, client.SpanContext().SpanID(), sagaSpan.Parent().SpanID())
	require.Equal(t, resp.SagaID, attr(sagaSpan, "natsaga.saga_id"))
	require.Equal(t, "rolled_back", attr(sagaSpan, "natsaga.status"))
	for name, outcome := range map[string]string{"execute debit": "ok", "execute credit": "failed", "compensate debit": "ok"} {
		s := byName[name]
		require.NotNil(t, s, "no span %q: %v", name, byName)
		require.Equal(t, sagaSpan.SpanContext().SpanID(), s.Parent().SpanID(), name)
		require.Equal(t, outcome, attr(s, "natsaga.outcome"), name)
		require.Equal(t, trace.SpanKindProducer, s.SpanKind())
	}

	// The agent's spans, each the child of its command's span.
	want := map[string]string{
		messages.ExecuteSubject("transfer", "debit"):    "execute debit",
		messages.ExecuteSubject("transfer", "credit"):   "execute credit",
		messages.CompensateSubject("transfer", "debit"): "compensate debit",
	}
	for _, s := range agRec.Ended() {
		require.Equal(t, traceID, s.SpanContext().TraceID(), s.Name())
		parent, ok := want[attr(s, "messaging.destination.name")]
		require.True(t, ok, s.Name())
		require.Equal(t, byName[parent].SpanContext().SpanID(), s.Parent().SpanID(), "%s is a child of %s", s.Name(), parent)
		require.True(t, s.Parent().IsRemote())
		delete(want, attr(s, "messaging.destination.name"))
	}
	require.Empty(t, want)
}

// TestARetriedSagaIsTracedToItsEnd: a saga whose compensation fails ends
// failed, and its span with it; an operator's retry, sent from a client
// span, opens a new saga span, that span's child, on which the retried
// compensation and the saga's end are traced.
func TestARetriedSagaIsTracedToItsEnd(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	rec := tracetest.NewSpanRecorder()
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{jobSaga(1)},
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	undoable := jobWorker(t, url)
	id := testenv.Start(t, nc, "job", messages.Context{})
	testenv.WaitStatus(t, nc, id, saga.Failed)
	require.Eventually(t, func() bool { return len(rec.Ended()) == 4 }, 10*time.Second, 5*time.Millisecond,
		"the saga, its two executes and its failed compensation")

	undoable.Store(true)
	cctx, client := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "operator")
	var resp messages.RetryResponse
	tracedRequest(t, nc, cctx, messages.RetrySubject, messages.RetryRequest{V: messages.Version, SagaID: id}, &resp)
	require.Nil(t, resp.Error)
	client.End()
	testenv.WaitStatus(t, nc, id, saga.RolledBack)

	require.Eventually(t, func() bool { return len(rec.Ended()) == 6 }, 10*time.Second, 5*time.Millisecond, "spans: %d", len(rec.Ended()))
	retried, comp := rec.Ended()[4], rec.Ended()[5]
	if retried.Name() != "saga job" {
		retried, comp = comp, retried
	}
	require.Equal(t, "saga job", retried.Name())
	require.Equal(t, client.SpanContext().TraceID(), retried.SpanContext().TraceID())
	require.Equal(t, client.SpanContext().SpanID(), retried.Parent().SpanID())
	require.Equal(t, id, attr(retried, "natsaga.saga_id"))
	require.Equal(t, "true", attr(retried, "natsaga.retry"))
	require.Equal(t, "rolled_back", attr(retried, "natsaga.status"))
	require.Equal(t, "compensate prepare", comp.Name())
	require.Equal(t, retried.SpanContext().SpanID(), comp.Parent().SpanID())
	require.Equal(t, "ok", attr(comp, "natsaga.outcome"))
}
