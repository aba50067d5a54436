package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/internal/metrics"
	"github.com/natsaga/natsaga/messages"
)

// Observe holds the flags by which a long-lived program is seen and
// operated: its log format, the address of its metrics and health
// endpoints, and -healthcheck, which asks a running copy whether it is
// ready.
type Observe struct {
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is text or json.
	LogFormat string
	// MetricsAddr is where /metrics, /livez and /readyz are served; ""
	// serves nothing.
	MetricsAddr string
	// Healthcheck asks the program listening on MetricsAddr for its
	// readiness, instead of running.
	Healthcheck bool
}

// Register adds -log-level, -log-format, -metrics-addr and -healthcheck to
// fs, with defaults from getenv (NATSAGA_LOG_FORMAT,
// NATSAGA_METRICS_ADDR).
func (o *Observe) Register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	format := getenv("NATSAGA_LOG_FORMAT")
	if format == "" {
		format = "text"
	}
	fs.StringVar(&o.LogFormat, "log-format", format, "text or json (env NATSAGA_LOG_FORMAT)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", getenv("NATSAGA_METRICS_ADDR"),
		"serve Prometheus /metrics, /livez and /readyz on this host:port; empty: none (env NATSAGA_METRICS_ADDR)")
	fs.BoolVar(&o.Healthcheck, "healthcheck", false, "ask the copy of this program serving -metrics-addr whether it is ready; exit 0 if so, 1 if not")
}

// Validate returns an error for a bad level or format. A -healthcheck
// without -metrics-addr is not one: it is a check that fails (exit 1, as a
// container's health check reads it), not a usage error (exit 2, which
// Docker reserves).
func (o *Observe) Validate() error {
	_, err := NewLogger(io.Discard, o.LogLevel, o.LogFormat)
	return err
}

// NewLogger returns a logger on w at level ("debug", "info", "warn" or
// "error") in format ("text" or "json"). It returns an error for another
// level or format.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		// A duration as the text format writes it ("1.5s"), where
		// slog's JSON writes nanoseconds.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// Health says whether a program is ready: Ready returns nil when it is,
// and why not otherwise. It is safe for concurrent use; a program serves
// it before it connects, and [Health.Set] names the connection once made.
type Health struct {
	mu    sync.Mutex
	nc    *nats.Conn
	ready func() error
}

// NewHealth returns the health of a program on nc: ready when nc is
// connected and ready (which may be nil) returns nil. With nc nil, the
// program is connecting until [Health.Set] is called.
func NewHealth(nc *nats.Conn, ready func() error) *Health {
	return &Health{nc: nc, ready: ready}
}

// Set names the program's connection and its own readiness.
func (h *Health) Set(nc *nats.Conn, ready func() error) {
	h.mu.Lock()
	h.nc, h.ready = nc, ready
	h.mu.Unlock()
}

// Ready returns nil when the program is ready.
func (h *Health) Ready() error {
	if h == nil {
		return errors.New("starting")
	}
	h.mu.Lock()
	nc, ready := h.nc, h.ready
	h.mu.Unlock()
	if nc == nil {
		return errors.New("connecting to NATS")
	}
	if !nc.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s)", nc.Status())
	}
	if ready != nil {
		return ready()
	}
	return nil
}

// ServeMetrics serves reg and health of program on addr until ctx ends or
// stop is called, logging the address. It returns once the address is
// bound, with the address to announce (its port chosen when addr's is 0;
// no host, ":9090", when it listens on every interface: the program's
// host, however it is reached) and stop, which ends the server and waits
// for it; it returns an error when the address cannot be bound.
func ServeMetrics(ctx context.Context, addr, program string, reg *prometheus.Registry, health func() error, log *slog.Logger) (announce string, stop func(), err error) {
	if err := checkListenAddr(addr); err != nil {
		return "", nil, err
	}
	srv, err := metrics.Listen(addr, metrics.Handler(reg, program, health), log)
	if err != nil {
		return "", nil, err
	}
	bound := srv.Addr().String()
	log.Info("serving metrics and health", "addr", bound)
	announce = bound
	if tcp, ok := srv.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		announce = net.JoinHostPort("", strconv.Itoa(tcp.Port))
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Run(ctx); err != nil {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	return announce, func() {
		cancel()
		<-done
	}, nil
}

// checkListenAddr returns an error matching ErrBadFlag for an address no
// listener can take: not host:port, or a port that is no number from 0 to
// 65535. (A port in use is the host's doing, not the flag's.)
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		if _, err = strconv.ParseUint(port, 10, 16); err == nil {
			return nil
		}
	}
	return BadFlag(fmt.Errorf("-metrics-addr %s: want host:port, the port 0 to 65535", messages.Quote(addr)))
}

// healthTimeout bounds a -healthcheck.
const healthTimeout = 3 * time.Second

// Healthcheck asks program, serving addr, for /readyz, prints the answer to
// w and returns the exit code: 0 when ready, 1 otherwise, and 1 when addr
// is served by another program, is not given, or is one the program
// would not serve (a port that is no number). An address with no host
// (":9090") is asked on 127.0.0.1.
func Healthcheck(addr, program string, w io.Writer) int {
	if addr == "" {
		fmt.Fprintln(w, "healthcheck: -healthcheck needs -metrics-addr (or NATSAGA_METRICS_ADDR)")
		return 1
	}
	if err := checkListenAddr(addr); err != nil {
		fmt.Fprintf(w, "healthcheck: %v\n", err)
		return 1
	}
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	client := &http.Client{Timeout: healthTimeout}
	resp, err := client.Get("http://" + net.JoinHostPort(host, port) + "/readyz")
	if err != nil {
		fmt.Fprintf(w, "healthcheck: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	if got := resp.Header.Get(metrics.ProgramHeader); got != program {
		if got == "" {
			got = "no natsaga program"
		}
		fmt.Fprintf(w, "healthcheck: %s serves %s, not %s\n", addr, messages.Clip(got), program)
		return 1
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprintf(w, "healthcheck: %s %s", resp.Status, body)
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// ServeObserved is [Serve] with the flags of o: the logger in o's level
// and format, the collector's target of [TuneGC], and, when o.Healthcheck
// is set, only the health check of a running copy. run gets the logger;
// it serves metrics itself, as only it knows its registry and readiness.
func ServeObserved(stderr io.Writer, process string, o Observe, run func(ctx context.Context, log *slog.Logger) error) int {
	if o.Healthcheck {
		return Healthcheck(o.MetricsAddr, process, stderr)
	}
	log, err := NewLogger(stderr, o.LogLevel, o.LogFormat)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log = log.With("process", process, "pid", os.Getpid())
	log.Debug("garbage collector target", "gogc", TuneGC(os.Getenv))
	ctx, stop := SignalContext()
	defer stop()
	err = run(ctx, log)
	switch {
	case err == nil:
		log.Info(process + " stopped cleanly")
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// Stopped by a signal before it was up (connecting to the server,
		// waiting for a stream): a stop asked for, not a failure.
		log.Info(process+" stopped while starting", "was", err.Error())
	case errors.Is(err, ErrBadFlag):
		log.Error(process+" stopped", "err", err)
		return 2
	default:
		log.Error(process+" stopped", "err", err)
		return 1
	}
	return 0
}

// flushWait bounds the flush of the traces at exit.
const flushWait = 5 * time.Second

// warnAtMost hands records on at warn when they are above it.
// OpenTelemetry's own messages at error are about what the program
// already said at warn (a variable it takes the default of) or what its
// error handler says at warn (an export that failed): tracing is never
// what stops a program.
type warnAtMost struct{ slog.Handler }

func (h warnAtMost) Handle(ctx context.Context, r slog.Record) error {
	r.Level = min(r.Level, slog.LevelWarn)
	return h.Handler.Handle(ctx, r)
}

func (h warnAtMost) WithAttrs(as []slog.Attr) slog.Handler {
	return warnAtMost{h.Handler.WithAttrs(as)}
}

func (h warnAtMost) WithGroup(name string) slog.Handler {
	return warnAtMost{h.Handler.WithGroup(name)}
}

// StartTracing returns the tracer provider of the program named service,
// nil when the OTEL_ variables getenv reads leave tracing off (see
// [TracingEnabled]), and a function to call at exit, which flushes the
// spans within five seconds and logs a failure to log. With tracing on, it
// logs where spans go, and OpenTelemetry's own errors and messages (an
// export that failed, a variable that does not parse) go to log too, in
// the program's format. It returns an error when the exporter cannot be
// made, or the variables ask for what it does not do (see [SetupTracing]).
func StartTracing(ctx context.Context, service string, getenv func(string) string, log *slog.Logger) (trace.TracerProvider, func(), error) {
	if TracingEnabled(getenv) {
		// Before the exporter reads its variables: it logs what it
		// cannot parse.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing", "err", err) }))
		otel.SetLogger(logr.FromSlogHandler(warnAtMost{log.Handler()}))
		// OpenTelemetry's own line, if any, names the value, not the
		// variable, and it takes a negative size, which stops the program.
		for _, v := range tracingNumbers {
			if s := getenv(v.name); s != "" {
				if _, ok := v.value(getenv); !ok {
					log.Warn("tracing: a variable that is not a whole number in its range; its default is taken",
						"variable", v.name, "value", messages.Clip(s), "want", fmt.Sprintf("%d to %d", v.min, v.max), "default", v.def)
				}
			}
		}
	}
	tp, stop, err := SetupTracing(ctx, service, getenv)
	if err != nil {
		return nil, nil, err
	}
	if tp != nil {
		log.Info("tracing on: spans go over OTLP/HTTP", "endpoint", TracesEndpoint(getenv))
	}
	return tp, func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushWait)
		defer cancel()
		if err := stop(fctx); err != nil {
			log.Warn("traces not flushed", "err", err)
		}
	}, nil
}
