// Package tracing carries OpenTelemetry trace context in NATS headers (W3C
// traceparent and tracestate) and sets up a program's tracer provider from
// the standard OTEL_ environment variables, with the OTLP exporter. Tracing
// is off unless those variables ask for it.
//
// docs/observe.md says which spans natsaga makes and how to turn them on.
package tracing
