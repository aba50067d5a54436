package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/natsaga/natsaga/internal/cli"
)

func TestTracingEnabled(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
	} {
		require.Equal(t, tc.want, cli.TracingEnabled(func(k string) string { return tc.env[k] }), "%v", tc.env)
	}
	tp, stop, err := cli.SetupTracing(context.Background(), "x", func(string) string { return "" })
	require.NoError(t, err)
	require.Nil(t, tp, "off by default")
	require.NoError(t, stop(context.Background()))
}

// TestTracesEndpoint: the traces' own endpoint as it is, else the general
// one with the traces' path, else the specification's default.
func TestTracesEndpoint(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "http://localhost:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}, "http://collector:4318/v1/traces"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/x"}, "http://traces:4318/x"},
	} {
		require.Equal(t, tc.want, cli.TracesEndpoint(func(k string) string { return tc.env[k] }), "%v", tc.env)
	}
}

// TestSetupTracingRefusesWhatItCannotSend: an exporter other than otlp or
// none, or an OTLP protocol other than http/protobuf, is an error naming
// the variable, with or without an endpoint (the spans would go to a gRPC
// port in a form it does not read, or nowhere, without a word), unless
// the SDK is disabled.
func TestSetupTracingRefusesWhatItCannotSend(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "jaeger"}, `OTEL_TRACES_EXPORTER="jaeger": natsaga exports otlp`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, `OTEL_TRACES_EXPORTER="console"`},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, `OTEL_EXPORTER_OTLP_PROTOCOL="grpc": natsaga exports http/protobuf only`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/json"`},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "jaeger"}, ""},
		// Tracing turned off by either switch checks nothing else.
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x"}, ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "None", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ""},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://x"}, ""},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, ""},
		// The traces' own protocol wins over the general one.
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, ""},
		// An endpoint that is no http(s) URL.
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "::not a url"}, `OTEL_EXPORTER_OTLP_ENDPOINT="::not a url": want an http:// or https:// URL`},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, `OTEL_EXPORTER_OTLP_ENDPOINT="localhost:4318": want an http:// or https:// URL`},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://c:4317"}, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="grpc://c:4317"`},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4318"}, ""},
		// The traces' own endpoint wins over the general one.
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "c:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ""},
	} {
		tp, stop, err := cli.SetupTracing(context.Background(), "x", func(k string) string { return tc.env[k] })
		if tc.want == "" {
			require.NoError(t, err, "%v", tc.env)
			require.NoError(t, stop(context.Background()))
			continue
		}
		require.ErrorContains(t, err, tc.want, "%v", tc.env)
		require.Nil(t, tp)
	}
}

// TestTracingNumbersOutOfRange: a size, delay or timeout of the batch
// processor or the exporter out of its range (OpenTelemetry's own reading
// took a negative size and stopped the program making a channel of it) is
// a warning naming the variable, and spans go out with the defaults.
func TestTracingNumbersOutOfRange(t *testing.T) {
	got := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- struct{}{}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	bad := map[string]string{
		"OTEL_BSP_MAX_QUEUE_SIZE":           "-5",
		"OTEL_BSP_MAX_EXPORT_BATCH_SIZE":    "-1",
		"OTEL_BSP_SCHEDULE_DELAY":           "0",
		"OTEL_BSP_EXPORT_TIMEOUT":           "99999999999",
		"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-1",
	}
	for k, v := range bad {
		t.Setenv(k, v)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	t.Cleanup(func() { otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {})); otel.SetLogger(logr.Discard()) })
	tp, stop, err := cli.StartTracing(context.Background(), "natsaga-test", os.Getenv, log)
	require.NoError(t, err)
	require.NotNil(t, tp)
	_, span := tp.Tracer("t").Start(context.Background(), "saga test")
	span.End()
	stop()
	select {
	case <-got:
	default:
		t.Fatal("no span exported")
	}
	warned := map[string]string{}
	for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
		var line map[string]any
		require.NoError(t, json.Unmarshal(l, &line))
		if line["msg"] == "tracing: a variable that is not a whole number in its range; its default is taken" {
			warned[line["variable"].(string)] = line["value"].(string)
		}
	}
	require.Equal(t, bad, warned, buf.String())
}

// TestSetupTracingExportsOTLP turns tracing on with the standard variables and
// checks that a span reaches an OTLP/HTTP endpoint, as a collector would
// receive it.
func TestSetupTracingExportsOTLP(t *testing.T) {
	got := make(chan *http.Request, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		got <- r
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_SERVICE_NAME", "")
	exportOneSpan(t)
	select {
	case r := <-got:
		require.Equal(t, http.MethodPost, r.Method)
		require.Equal(t, "/v1/traces", r.URL.Path)
		require.Equal(t, "application/x-protobuf", r.Header.Get("Content-Type"))
		body, _ := io.ReadAll(r.Body)
		require.Contains(t, string(body), "saga test")
		require.Contains(t, string(body), "natsaga-test")
	default:
		t.Fatal("no span exported")
	}
}

// TestSetupTracingDefaultsToPlainHTTP turns tracing on with OTEL_TRACES_EXPORTER
// alone: spans go to the specification's default endpoint,
// http://localhost:4318, in plain HTTP.
func TestSetupTracingDefaultsToPlainHTTP(t *testing.T) {
	l, err := net.Listen("tcp", "localhost:4318")
	if err != nil {
		t.Skipf("the default endpoint's port is taken: %v", err)
	}
	got := make(chan string, 10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Method + " " + r.URL.Path
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	for _, v := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"} {
		t.Setenv(v, "")
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	exportOneSpan(t)
	select {
	case r := <-got:
		require.Equal(t, "POST /v1/traces", r)
	default:
		t.Fatal("no span exported")
	}
}

// exportOneSpan sets tracing up from the process environment as
// "natsaga-test", ends one span "saga test", and flushes it.
func exportOneSpan(t *testing.T) {
	t.Helper()
	tp, stop, err := cli.SetupTracing(context.Background(), "natsaga-test", os.Getenv)
	require.NoError(t, err)
	require.NotNil(t, tp)
	_, span := tp.Tracer("t").Start(context.Background(), "saga test")
	span.End()
	require.NoError(t, stop(context.Background()), "flushes the batch")
}
