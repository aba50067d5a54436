package tracing

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Propagator is the propagator natsaga uses: W3C trace context and baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Carrier adapts NATS message headers to OpenTelemetry's text map carrier.
type Carrier nats.Header

// Get returns the first value of key.
func (c Carrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set sets key to value.
func (c Carrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names.
func (c Carrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Extract returns ctx with the span context that h carries, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return Propagator.Extract(ctx, Carrier(h))
}

// Inject writes the span context of ctx into m's headers, making them when
// m has none. A ctx with no valid span writes nothing.
func Inject(ctx context.Context, m *nats.Msg) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	Propagator.Inject(ctx, Carrier(m.Header))
}
