package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/natsaga/natsaga/internal/testenv"
)

// TestSaysTracingOn: with tracing on, floodsim says where the spans go
// with its other start-up lines, as every program does at start; with
// tracing off it says nothing of it, and -plan's output stays JSON alone.
func TestSaysTracingOn(t *testing.T) {
	_, url := testenv.Server(t)
	// The exporter reads the process environment; nothing listens there,
	// and no span is made before the coordinator answers, which none does.
	const endpoint = "http://127.0.0.1:1"
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Cleanup(func() {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
		otel.SetLogger(logr.Discard())
	})
	args := []string{"-spawn=false", "-nats", url, "-agent-wait", "500ms"}
	noCoordinator := "floodsim: the coordinator did not answer on natsaga.summary within 500ms (-agent-wait): "

	var stdout, stderr bytes.Buffer
	require.Equal(t, 1, mainCode(args, env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), &stdout, &stderr), stderr.String())
	require.Equal(t, "floodsim: tracing on: spans go over OTLP/HTTP to http://127.0.0.1:1/v1/traces\n", stdout.String())
	require.True(t, strings.HasPrefix(stderr.String(), noCoordinator), stderr.String())
	require.Equal(t, 1, strings.Count(stderr.String(), "\n"), "nothing else: %s", stderr.String())

	stdout.Reset()
	stderr.Reset()
	require.Equal(t, 1, mainCode(args, env(), &stdout, &stderr), stderr.String())
	require.Empty(t, stdout.String())
	require.True(t, strings.HasPrefix(stderr.String(), noCoordinator), stderr.String())
	require.Equal(t, 1, strings.Count(stderr.String(), "\n"), "nothing else: %s", stderr.String())

	stdout.Reset()
	stderr.Reset()
	require.Equal(t, 0, mainCode(append([]string{"-plan"}, small...), env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), &stdout, &stderr), stderr.String())
	var plan map[string]any
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &plan), stdout.String())
	require.Empty(t, stderr.String())
}
