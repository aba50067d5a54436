package tracing_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/internal/tracing"
)

func TestInjectExtract(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	m := nats.NewMsg("a")
	tracing.Inject(ctx, m)
	require.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-01$`, m.Header.Get("traceparent"))
	got := trace.SpanContextFromContext(tracing.Extract(context.Background(), m.Header))
	require.Equal(t, span.SpanContext().TraceID(), got.TraceID())
	require.Equal(t, span.SpanContext().SpanID(), got.SpanID())
	require.True(t, got.IsRemote())

	// No span: no header; no header: no span.
	m = &nats.Msg{Subject: "b"}
	tracing.Inject(context.Background(), m)
	require.Nil(t, m.Header)
	require.False(t, trace.SpanContextFromContext(tracing.Extract(context.Background(), nil)).IsValid())
}
