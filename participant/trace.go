package participant

import (
	"context"

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
