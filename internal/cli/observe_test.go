package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/metrics"
)

func TestNewLoggerFormats(t *testing.T) {
	var b bytes.Buffer
	log, err := cli.NewLogger(&b, "info", "json")
	require.NoError(t, err)
	log.Info("hello", "saga_id", "s1", "for", 1500*time.Millisecond, slog.Group("g", "wait", time.Second))
	log.Debug("hidden")
	var rec map[string]any
	require.NoError(t, json.Unmarshal(b.Bytes(), &rec), b.String())
	require.Equal(t, "hello", rec["msg"])
	require.Equal(t, "s1", rec["saga_id"])
	// Durations as the text format writes them, not in nanoseconds.
	require.Equal(t, "1.5s", rec["for"])
	require.Equal(t, map[string]any{"wait": "1s"}, rec["g"])
	require.Equal(t, 1, strings.Count(b.String(), "\n"))

	b.Reset()
	log, err = cli.NewLogger(&b, "debug", "text")
	require.NoError(t, err)
	log.Debug("shown", "step", "x")
	require.Contains(t, b.String(), "msg=shown step=x")

	_, err = cli.NewLogger(io.Discard, "info", "xml")
	require.ErrorContains(t, err, `log format "xml": want text or json`)

	// Either case, as for the level.
	b.Reset()
	log, err = cli.NewLogger(&b, "WARN", "JSON")
	require.NoError(t, err)
	log.Info("hidden")
	log.Warn("shown")
	require.NoError(t, json.Unmarshal(b.Bytes(), &rec), b.String())
	require.Equal(t, "shown", rec["msg"])
	_, err = cli.NewLogger(io.Discard, "loud", "text")
	require.ErrorContains(t, err, "log level")
}

func TestObserveFlags(t *testing.T) {
	parse := func(args []string, env map[string]string) (cli.Observe, error) {
		var o cli.Observe
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o.Register(fs, func(k string) string { return env[k] })
		if err := fs.Parse(args); err != nil {
			return o, err
		}
		return o, o.Validate()
	}
	o, err := parse(nil, nil)
	require.NoError(t, err)
	require.Equal(t, cli.Observe{LogLevel: "info", LogFormat: "text"}, o)
	o, err = parse(nil, map[string]string{"NATSAGA_LOG_FORMAT": "json", "NATSAGA_METRICS_ADDR": ":9090"})
	require.NoError(t, err)
	require.Equal(t, cli.Observe{LogLevel: "info", LogFormat: "json", MetricsAddr: ":9090"}, o)
	_, err = parse([]string{"-log-format", "yaml"}, nil)
	require.Error(t, err)
	// Without an address, a health check that fails (exit 1), not a
	// usage error (exit 2, which Docker reserves): see TestHealthcheck.
	o, err = parse([]string{"-healthcheck"}, nil)
	require.NoError(t, err)
	require.True(t, o.Healthcheck)
}

// TestHealthcheck asks a served readiness, ready and not, as a container
// health check does, and a port nobody serves.
func TestHealthcheck(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer ns.Shutdown()
	var c cli.Conn
	c.URL = ns.ClientURL()
	nc, err := c.Connect(context.Background(), "test", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer nc.Close()

	var notReady atomic.Bool
	health := cli.NewHealth(nc, func() error {
		if notReady.Load() {
			return errors.New("standing up")
		}
		return nil
	})
	srv := httptest.NewServer(metrics.Handler(metrics.NewRegistry(), "test-agent", health.Ready))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	var out bytes.Buffer
	require.Equal(t, 0, cli.Healthcheck(addr, "test-agent", &out))
	require.Contains(t, out.String(), "200 OK ready")

	notReady.Store(true)
	out.Reset()
	require.Equal(t, 1, cli.Healthcheck(addr, "test-agent", &out))
	require.Contains(t, out.String(), "503")
	require.Contains(t, out.String(), "standing up")

	notReady.Store(false)
	nc.Close()
	out.Reset()
	require.Equal(t, 1, cli.Healthcheck(addr, "test-agent", &out))
	require.Contains(t, out.String(), "not connected to NATS")

	srv.Close()
	out.Reset()
	require.Equal(t, 1, cli.Healthcheck(addr, "test-agent", &out))
	require.Contains(t, out.String(), "connection refused")

	// A port that another program serves, ready or not, is not this one's.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ready\n")) }))
	defer other.Close()
	addr = strings.TrimPrefix(other.URL, "http://")
	out.Reset()
	require.Equal(t, 1, cli.Healthcheck(addr, "test-agent", &out))
	require.Equal(t, "healthcheck: "+addr+" serves no natsaga program, not test-agent\n", out.String())

	// No address; a port given by its service name, which no program
	// serves (it refuses the flag), nor a port out of range.
	for _, tc := range []struct{ addr, want string }{
		{"", "healthcheck: -healthcheck needs -metrics-addr (or NATSAGA_METRICS_ADDR)\n"},
		{"127.0.0.1:http", `healthcheck: -metrics-addr "127.0.0.1:http": want host:port, the port 0 to 65535` + "\n"},
		{"127.0.0.1:65536", `healthcheck: -metrics-addr "127.0.0.1:65536": want host:port, the port 0 to 65535` + "\n"},
	} {
		out.Reset()
		require.Equal(t, 1, cli.Healthcheck(tc.addr, "test-agent", &out), tc.addr)
		require.Contains(t, out.String(), tc.want, tc.addr)
	}
}

// TestTracingErrorsGoToTheLog: with tracing on, OpenTelemetry's own
// errors are lines of the program's log, in its format.
func TestTracingErrorsGoToTheLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}
	tp, stop, err := cli.StartTracing(context.Background(), "natsaga-test", func(k string) string { return env[k] }, log)
	require.NoError(t, err)
	require.NotNil(t, tp)
	t.Cleanup(func() { otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {})) })
	lines := func() []map[string]any {
		var out []map[string]any
		for _, l := range bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n")) {
			var line map[string]any
			require.NoError(t, json.Unmarshal(l, &line), buf.String())
			out = append(out, line)
		}
		buf.Reset()
		return out
	}
	got := lines()
	require.Len(t, got, 1)
	require.Equal(t, "tracing on: spans go over OTLP/HTTP", got[0]["msg"])
	require.Equal(t, "http://127.0.0.1:1/v1/traces", got[0]["endpoint"])
	otel.Handle(errors.New("export refused"))
	got = lines()
	require.Len(t, got, 1)
	require.Equal(t, "tracing", got[0]["msg"])
	require.Equal(t, "export refused", got[0]["err"])
	stop() // nothing to flush

	// A variable the exporter reads and cannot parse is said in the log's
	// format too, not as a line of Go's standard logger.
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "abc")
	env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "abc"
	otel.SetLogger(logr.Discard()) // what the first call set, undone
	_, stop, err = cli.StartTracing(context.Background(), "natsaga-test", func(k string) string { return env[k] }, log)
	require.NoError(t, err)
	stop()
	require.Contains(t, buf.String(), "abc")
	got = lines()
	require.Len(t, got, 3, "the timeout that does not parse, said by natsaga and by the exporter, and where spans go")
	require.Equal(t, "tracing: a variable that is not a whole number in its range; its default is taken", got[0]["msg"])
	require.Equal(t, "OTEL_EXPORTER_OTLP_TIMEOUT", got[0]["variable"])
	require.Equal(t, "abc", got[0]["value"])
	for _, l := range got {
		require.Contains(t, []any{"INFO", "WARN"}, l["level"], "a default taken is no error: %v", l)
	}
}

// TestParseSaysADurationNeedsItsUnit: a duration flag given a bare number
// is told what it takes, beside the flag package's own "parse error"; a bad
// value of another flag is not.
func TestParseSaysADurationNeedsItsUnit(t *testing.T) {
	for _, tc := range []struct {
		args []string
		hint bool
	}{
		{[]string{"-wait", "5"}, true},
		{[]string{"-wait=5"}, true},
		{[]string{"-count", "x"}, false},
	} {
		var out bytes.Buffer
		fs := flag.NewFlagSet("p", flag.ContinueOnError)
		fs.SetOutput(&out)
		fs.Duration("wait", time.Second, "how long")
		fs.Int("count", 1, "how many")
		err := cli.Parse(fs, tc.args)
		require.ErrorIs(t, err, cli.ErrPrinted)
		require.Equal(t, tc.hint, strings.Contains(out.String(), "-wait takes a duration with its unit, such as 5s, 250ms or 2m\n"), "%v: %s", tc.args, out.String())
	}
}

// TestServeMetricsAnnouncesWhereItServes: the address to announce is the
// one bound, its port chosen; with no host (every interface), it names
// none, where the listener's own would be [::], which no other host can
// reach.
func TestServeMetricsAnnouncesWhereItServes(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"127.0.0.1:0", `^127\.0\.0\.1:[1-9][0-9]*$`},
		{":0", `^:[1-9][0-9]*$`},
	} {
		announce, stop, err := cli.ServeMetrics(t.Context(), c.addr, "coordinator", metrics.NewRegistry(), nil, slog.New(slog.DiscardHandler))
		require.NoError(t, err)
		require.Regexp(t, c.want, announce, c.addr)
		_, port, _ := strings.Cut(announce, ":")
		resp, err := http.Get("http://127.0.0.1:" + port + "/livez")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		stop()
	}
}

// TestServeMetricsRefusesABadAddress: an address no listener can take is
// a bad flag (the program exits 2); a port in use is not.
func TestServeMetricsRefusesABadAddress(t *testing.T) {
	for _, addr := range []string{"garbage", ":99999", ":-1", "127.0.0.1:", "127.0.0.1:http"} {
		_, _, err := cli.ServeMetrics(t.Context(), addr, "coordinator", metrics.NewRegistry(), nil, slog.New(slog.DiscardHandler))
		require.ErrorIs(t, err, cli.ErrBadFlag, addr)
		require.ErrorContains(t, err, "-metrics-addr", addr)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	_, _, err = cli.ServeMetrics(t.Context(), taken.Addr().String(), "coordinator", metrics.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	require.NotErrorIs(t, err, cli.ErrBadFlag, "a port in use")
}

// TestServeObservedExitCodes: a program that ends without an error, or
// that a signal stops before it is up (its error wraps the cancelled
// context, as a connect or a wait for a stream does), exits 0; any other
// error, a cancellation no signal asked for included, exits 1.
func TestServeObservedExitCodes(t *testing.T) {
	o := cli.Observe{LogLevel: "info", LogFormat: "text"}
	for _, tc := range []struct {
		name string
		run  func(ctx context.Context) error
		code int
		log  []string
	}{
		{"ended", func(context.Context) error { return nil }, 0, []string{"level=INFO msg=\"test stopped cleanly\""}},
		{"failed", func(context.Context) error { return errors.New("boom") }, 1, []string{"level=ERROR msg=\"test stopped\"", "err=boom"}},
		{"cancelled by itself", func(context.Context) error { return fmt.Errorf("wait: %w", context.Canceled) }, 1, []string{"level=ERROR msg=\"test stopped\"", "err=\"wait: context canceled\""}},
		{"stopped by a signal while starting", func(ctx context.Context) error {
			require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGTERM))
			<-ctx.Done()
			return fmt.Errorf("connect to nats://x: %w (last attempt: no servers)", ctx.Err())
		}, 0, []string{`level=INFO msg="test stopped while starting"`, `was="connect to nats://x: context canceled (last attempt: no servers)"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			code := cli.ServeObserved(&logs, "test", o, func(ctx context.Context, _ *slog.Logger) error { return tc.run(ctx) })
			require.Equal(t, tc.code, code, logs.String())
			for _, want := range tc.log {
				require.Contains(t, logs.String(), want)
			}
		})
	}
}
