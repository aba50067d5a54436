// Package tracing carries OpenTelemetry trace context in NATS headers (W3C
// traceparent and tracestate). It needs only OpenTelemetry's API: the
// libraries (coordinator, participant, client) use it, and a program
// chooses its exporter (internal/cli sets up the OTLP one from the
// standard OTEL_ environment variables).
//
// docs/observe.md says which spans natsaga makes and how to turn them on.
package tracing
