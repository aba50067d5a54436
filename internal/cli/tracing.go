package cli

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// TracingEnabled reports whether the OTEL_ variables that getenv reads ask for
// traces: OTEL_TRACES_EXPORTER is "otlp", or an OTLP endpoint
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set
// and OTEL_TRACES_EXPORTER is not "none"; and OTEL_SDK_DISABLED is not
// "true".
func TracingEnabled(getenv func(string) string) bool {
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

// TracesEndpoint is where the exporter sends spans, as the OTEL_ variables
// that getenv reads say: for a program to say where, with tracing on.
func TracesEndpoint(getenv func(string) string) string {
	if e := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); e != "" {
		return e
	}
	if e := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); e != "" {
		return strings.TrimSuffix(e, "/") + "/v1/traces"
	}
	return "http://localhost:4318/v1/traces"
}

// tracingNumber is an OTEL_ variable of the OTLP exporter or the batch
// span processor that takes a whole number (of milliseconds, or of
// spans): the range natsaga takes, and the default it takes instead of a
// value out of it. OpenTelemetry's own reading takes any integer: a
// negative queue or batch size stops the program, a huge one takes all
// its memory, a negative timeout fails every export.
type tracingNumber struct {
	name          string
	min, max, def int
}

// maxTracingMillis bounds the timeouts and delay: an hour.
// maxTracingSpans bounds the queue and a batch.
const (
	maxTracingMillis = 3_600_000
	maxTracingSpans  = 1 << 20
)

// The variables of tracingNumbers, by name, for SetupTracing.
var (
	exporterTimeout       = tracingNumber{"OTEL_EXPORTER_OTLP_TIMEOUT", 1, maxTracingMillis, 10_000}
	exporterTracesTimeout = tracingNumber{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 1, maxTracingMillis, 10_000}
	bspScheduleDelay      = tracingNumber{"OTEL_BSP_SCHEDULE_DELAY", 1, maxTracingMillis, sdktrace.DefaultScheduleDelay}
	bspExportTimeout      = tracingNumber{"OTEL_BSP_EXPORT_TIMEOUT", 1, maxTracingMillis, sdktrace.DefaultExportTimeout}
	bspMaxQueueSize       = tracingNumber{"OTEL_BSP_MAX_QUEUE_SIZE", 1, maxTracingSpans, sdktrace.DefaultMaxQueueSize}
	bspMaxExportBatchSize = tracingNumber{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, maxTracingSpans, sdktrace.DefaultMaxExportBatchSize}
	tracingNumbers        = []tracingNumber{exporterTimeout, exporterTracesTimeout, bspScheduleDelay, bspExportTimeout, bspMaxQueueSize, bspMaxExportBatchSize}
)

// value returns v's value as getenv reads it, and whether it is a whole
// number in v's range; v's default when it is not, or is not set.
func (v tracingNumber) value(getenv func(string) string) (int, bool) {
	s := getenv(v.name)
	if s == "" {
		return v.def, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < v.min || n > v.max {
		return v.def, false
	}
	return n, true
}

// millis is v's value as a duration of milliseconds.
func (v tracingNumber) millis(getenv func(string) string) time.Duration {
	n, _ := v.value(getenv)
	return time.Duration(n) * time.Millisecond
}

// batchOptions are the batch span processor's options as getenv's
// variables ask, each in its range ([tracingNumber]): given explicitly,
// they win over the processor's own reading of the variables.
func batchOptions(getenv func(string) string) []sdktrace.BatchSpanProcessorOption {
	queue, _ := bspMaxQueueSize.value(getenv)
	batch, _ := bspMaxExportBatchSize.value(getenv)
	return []sdktrace.BatchSpanProcessorOption{
		sdktrace.WithMaxQueueSize(queue),
		sdktrace.WithMaxExportBatchSize(min(batch, queue)), // as the specification asks
		sdktrace.WithBatchTimeout(bspScheduleDelay.millis(getenv)),
		sdktrace.WithExportTimeout(bspExportTimeout.millis(getenv)),
	}
}

// checkTracingEnv returns an error when the OTEL_ variables that getenv
// reads ask for an exporter or a protocol natsaga does not have: it
// exports OTLP over HTTP with protobuf, and would otherwise send that to
// a gRPC port, or no spans at all, without a word.
func checkTracingEnv(getenv func(string) string) error {
	switch v := getenv("OTEL_TRACES_EXPORTER"); strings.ToLower(v) {
	case "", "otlp", "none":
	default:
		return fmt.Errorf("tracing: OTEL_TRACES_EXPORTER=%q: natsaga exports otlp (OTLP over HTTP), or none", v)
	}
	// The traces' own variable wins over the general one, which may then
	// be for other signals.
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if getenv(name) == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	if v := getenv(name); v != "" && v != "http/protobuf" {
		return fmt.Errorf("tracing: %s=%q: natsaga exports http/protobuf only (an OTLP collector's port 4318)", name, v)
	}
	// The endpoint the spans go to, which the exporter would otherwise
	// take as it could and send nothing to, said only as an error an
	// export at a time.
	name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	if getenv(name) == "" {
		name = "OTEL_EXPORTER_OTLP_ENDPOINT"
	}
	if v := getenv(name); v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("tracing: %s=%q: want an http:// or https:// URL, such as http://localhost:4318", name, v)
		}
	}
	return nil
}

// SetupTracing returns the tracer provider of the program named service, and a
// function that flushes and stops it. When [TracingEnabled] says no, it returns a
// nil provider (pass it on: natsaga's parts then make no spans at all) and
// a function that does nothing. Otherwise spans go in
// batches to the OTLP/HTTP exporter, which reads its endpoint, headers,
// protocol and timeout from the OTEL_EXPORTER_OTLP_ variables (with no
// endpoint set, http://localhost:4318, in plain HTTP as the specification
// says); the
// resource is service (unless OTEL_SERVICE_NAME says otherwise) with
// OTEL_RESOURCE_ATTRIBUTES. The exporter's own variables are read from the
// process environment, not through getenv. It returns an error when the
// exporter cannot be made, or when OTEL_TRACES_EXPORTER names another
// exporter than otlp or none, or the OTLP protocol is not http/protobuf
// (tracing on or not: such a variable asks for spans natsaga cannot send).
func SetupTracing(ctx context.Context, service string, getenv func(string) string) (trace.TracerProvider, func(context.Context) error, error) {
	// Either switch turns tracing off whatever else is set.
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(getenv("OTEL_TRACES_EXPORTER"), "none") {
		return nil, func(context.Context) error { return nil }, nil
	}
	if err := checkTracingEnv(getenv); err != nil {
		return nil, nil, err
	}
	if !TracingEnabled(getenv) {
		return nil, func(context.Context) error { return nil }, nil
	}
	var opts []otlptracehttp.Option
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" &&
		getenv("OTEL_EXPORTER_OTLP_INSECURE") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_INSECURE") == "" {
		// The specification's default endpoint is http://localhost:4318;
		// the Go exporter's, with no variable set, would be https.
		opts = append(opts, otlptracehttp.WithInsecure())
	}
	// The traces' own timeout wins over the general one; one out of its
	// range is the default, as the warning said.
	timeout := exporterTracesTimeout
	if getenv(timeout.name) == "" {
		timeout = exporterTimeout
	}
	if _, ok := timeout.value(getenv); !ok {
		opts = append(opts, otlptracehttp.WithTimeout(timeout.millis(getenv)))
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
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, batchOptions(getenv)...), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}
