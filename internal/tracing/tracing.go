package tracing

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
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

// Enabled reports whether the OTEL_ variables that getenv reads ask for
// traces: OTEL_TRACES_EXPORTER is "otlp", or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
// and OTEL_TRACES_EXPORTER is not "none"; and OTEL_SDK_DISABLED is not
// "true".
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(getenv("OTEL_TRACES_EXPORTER")) {
	case "otlp":
		return true
	case "none":
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup returns the tracer provider of the program named service, and a
// function that flushes and stops it. When [Enabled] says no, it returns a
// nil provider (pass it on: natsaga's parts then make no spans at all) and
// a function that does nothing. Otherwise spans go in
// batches to the OTLP/HTTP exporter, which reads its endpoint, headers,
// protocol and timeout from the OTEL_EXPORTER_OTLP_ variables (with no
// endpoint set, http://localhost:4318, in plain HTTP as the specification
// says); the
// resource is service (unless OTEL_SERVICE_NAME says otherwise) with
// OTEL_RESOURCE_ATTRIBUTES. The exporter's own variables are read from the
// process environment, not through getenv. It returns an error when the
// exporter cannot be made.
func Setup(ctx context.Context, service string, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	if !Enabled(getenv) {
		return nil, func(context.Context) error { return nil }, nil
	}
	var opts []otlptracehttp.Option
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" &&
		getenv("OTEL_EXPORTER_OTLP_INSECURE") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE") == "" {
		// The specification's default endpoint is http://localhost:4318;
		// the Go exporter's, with no variable set, would be https.
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: %w", err)
	}
	// The environment (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}
