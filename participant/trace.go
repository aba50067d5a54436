package participant

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/internal/tracing"
)

// tracerName names the agent's tracer.
const tracerName = "github.com/natsaga/natsaga/participant"

// traced handles m as handle does, inside a span that is a child of the
// span context m's headers carry (the coordinator's span of the command),
// when Options.TracerProvider is set.
func (a *Agent) traced(ctx context.Context, m jetstream.Msg) {
	if a.opts.TracerProvider == nil {
		a.handle(ctx, m)
		return
	}
	parent := tracing.Extract(ctx, m.Headers())
	ctx, span := a.opts.TracerProvider.Tracer(tracerName).Start(parent, "agent "+a.opts.Role+" "+m.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("natsaga.role", a.opts.Role), attribute.String("natsaga.agent", a.opts.Name),
			attribute.String("messaging.destination.name", m.Subject())))
	defer span.End()
	a.handle(ctx, m)
}

// span records, when Options.TracerProvider is set, the span of m, a
// command run in a batch that began at began, as traced would have.
func (a *Agent) span(ctx context.Context, m jetstream.Msg, began time.Time) {
	if a.opts.TracerProvider == nil {
		return
	}
	_, span := a.opts.TracerProvider.Tracer(tracerName).Start(tracing.Extract(ctx, m.Headers()), "agent "+a.opts.Role+" "+m.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(began),
		trace.WithAttributes(attribute.String("natsaga.role", a.opts.Role), attribute.String("natsaga.agent", a.opts.Name),
			attribute.String("messaging.destination.name", m.Subject()), attribute.Bool("natsaga.batched", true)))
	span.End()
}
