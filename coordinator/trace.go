package coordinator

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/internal/tracing"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// tracerName names the coordinator's tracer.
const tracerName = "github.com/natsaga/natsaga/coordinator"

// sagaTrace is the trace of one saga this coordinator started: the saga's
// span, and the span of the command it has outstanding.
type sagaTrace struct {
	ctx  context.Context // holds the saga's span
	saga trace.Span
	step trace.Span
}

// tracing reports whether the coordinator makes spans.
func (c *Coordinator) tracing() bool { return c.opts.TracerProvider != nil }

// traceStart opens the span of saga x, which the start request m started.
// One saga is one trace: its steps' and compensations' spans are children
// of this span. When m started x alone, the span is a child of the span
// context m's headers carry; when m is a batch that started others too
// (shared), it is the root of a trace of its own, linked to that span
// context, so that a tick's batch of starts does not make one trace of
// its sagas. Only the coordinator that started a saga traces it.
func (c *Coordinator) traceStart(m *nats.Msg, x *saga.Execution, shared bool) {
	if !c.tracing() {
		return
	}
	parent := tracing.Extract(context.Background(), m.Header)
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("natsaga.saga_id", x.ID), attribute.String("natsaga.saga", x.Saga))}
	if shared {
		if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
		opts = append(opts, trace.WithNewRoot())
	}
	c.openSaga(parent, x.ID, x.Saga, opts...)
}

// traceRetry opens a span for saga id of type name, which the retry
// request m sent back to compensating: its span ended when it failed, and
// the commands of the retry, and the saga's end, are traced on this one.
// It is a child of the span context m's headers carry (a trace of its own
// when they carry none), with natsaga.retry set. undo ends it when the
// retry is not stored after all.
func (c *Coordinator) traceRetry(m *nats.Msg, id, name string) (undo func()) {
	if !c.tracing() || c.traces[id] != nil {
		return func() {}
	}
	c.openSaga(tracing.Extract(context.Background(), m.Header), id, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("natsaga.saga_id", id), attribute.String("natsaga.saga", name), attribute.Bool("natsaga.retry", true)))
	return func() {
		if t := c.traces[id]; t != nil {
			t.saga.SetStatus(codes.Error, "the retry was not stored")
			t.saga.End()
			delete(c.traces, id)
		}
	}
}

// openSaga opens the span of saga id of type name, a child of parent, and
// keeps it until the saga ends.
func (c *Coordinator) openSaga(parent context.Context, id, name string, opts ...trace.SpanStartOption) {
	ctx, span := c.tracer.Start(parent, "saga "+name, opts...)
	c.traces[id] = &sagaTrace{ctx: ctx, saga: span}
}

// traceCommand opens the span of cmd, a child of its saga's span, and puts
// its context in m's headers, so that the agent's work is its child. An
// open span of an earlier command of the saga ends first.
func (c *Coordinator) traceCommand(cmd *messages.Command, m *nats.Msg) {
	if !c.tracing() {
		return
	}
	t := c.traces[cmd.SagaID]
	if t == nil {
		return
	}
	if t.step != nil {
		t.step.SetAttributes(attribute.String("natsaga.outcome", "superseded"))
		t.step.End()
	}
	ctx, span := c.tracer.Start(t.ctx, string(cmd.Action)+" "+cmd.Step, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("natsaga.saga_id", cmd.SagaID), attribute.String("natsaga.step", cmd.Step),
			attribute.String("natsaga.action", string(cmd.Action)), attribute.Int("natsaga.attempt", cmd.Attempt),
			attribute.Int("natsaga.seq", cmd.Seq), attribute.Int64("natsaga.tick", cmd.Tick)))
	t.step = span
	tracing.Inject(ctx, m)
}

// traceAnswer ends the span of the command an answer with outcome
// settled.
func (c *Coordinator) traceAnswer(id string, outcome messages.Outcome, reason string) {
	t := c.traces[id]
	if t == nil || t.step == nil {
		return
	}
	if outcome == messages.Working {
		t.step.AddEvent("working")
		return
	}
	t.step.SetAttributes(attribute.String("natsaga.outcome", string(outcome)))
	if outcome != messages.OK {
		t.step.SetStatus(codes.Error, reason)
	}
	t.step.End()
	t.step = nil
}

// traceEvents notes the status changes of a committed batch on the sagas'
// spans, and ends the span of each saga that finished.
func (c *Coordinator) traceEvents(events []messages.Event) {
	if !c.tracing() {
		return
	}
	for i := range events {
		ev := &events[i]
		t := c.traces[ev.SagaID]
		if t == nil {
			continue
		}
		st := saga.Status(ev.Status)
		t.saga.AddEvent(ev.Status, trace.WithAttributes(attribute.Int64("natsaga.tick", ev.Tick), attribute.String("natsaga.reason", ev.Reason)))
		if !st.Terminal() {
			continue
		}
		if t.step != nil {
			t.step.End()
		}
		t.saga.SetAttributes(attribute.String("natsaga.status", ev.Status))
		if st != saga.Completed {
			t.saga.SetStatus(codes.Error, ev.Reason)
		}
		t.saga.End()
		delete(c.traces, ev.SagaID)
	}
}
