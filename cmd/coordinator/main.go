// Command coordinator drives the flood sagas over NATS JetStream: it sends
// step commands to the agents, applies their replies and the simulation
// ticks, rolls failed sagas back, and keeps every saga durable in the
// server's JetStream. Restarted, it resumes every saga where it stopped.
// Start a second one and it stands by, taking over within -lease-ttl of the
// first one's death.
//
// Usage:
//
// It runs the sagas of a definitions file (docs/protocol.md, "Definitions
// files") given with -definitions, and the flood sagas shipped in it
// (flood/sagas.json) without one. With -definitions none it starts with no
// sagas of its own: it runs those registered at run time (natsaga
// register) and those a coordinator stored before.
//
//	coordinator [-nats nats://127.0.0.1:4222] [-definitions FILE|none] [-replicas 1] [-ack-wait 5s]
//	            [-retention 168h] [-lease-ttl 3s] [-max-active N] [-max-active-bytes N] [-log-level info]
//	            [-log-format text] [-metrics-addr :9090]
//	            [-creds file] [-nkey seedfile] [-tls-ca ca.pem] [-tls-cert cert.pem -tls-key key.pem]
//	coordinator -healthcheck -metrics-addr :9090
//
// A start beyond -max-active sagas in flight, or that would take the bytes
// the sagas in flight hold (their contexts, outputs and histories, as
// encoded, counted approximately) past -max-active-bytes, is answered
// "busy" at once, and
// so is a request answered from the bucket (a start with a saga id, the
// status or retry of a saga no longer in memory, a list of finished sagas)
// while 256 such reads run, or four lists of finished sagas: a flood of
// requests cannot make the coordinator start unbounded work. These two
// limits are fixed (coordinator.MaxBucketReads); docs/guarantees.md,
// "Hostile input", has the others.
//
// With -metrics-addr it serves Prometheus metrics on /metrics, liveness on
// /livez and readiness on /readyz (ready: connected, set up, and holding
// the lease or standing by; not ready again after a term ends until the
// next has set up); -healthcheck asks a running coordinator's /readyz, for
// container health checks. OTEL_ environment variables turn on tracing
// (see docs/observe.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/metrics"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// config is the coordinator's configuration.
type config struct {
	conn      cli.Conn
	defsFile  string
	replicas  int
	ackWait   time.Duration
	retention time.Duration
	leaseTTL  time.Duration
	maxActive int
	// maxActiveBytes is -max-active-bytes.
	maxActiveBytes int64
	// maxDefinitionBytes is -max-definition-bytes.
	maxDefinitionBytes int64
	batch              int
	observe            cli.Observe
	// defs are the sagas of defsFile, read as the flags are parsed.
	defs []saga.Definition
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.conn.Register(fs, getenv)
	fs.StringVar(&c.defsFile, "definitions", "", "definitions file (JSON) of the sagas to run; empty: the flood sagas; \"none\": only those registered at run time or stored (to read a file named none, write ./none)")
	fs.IntVar(&c.replicas, "replicas", 1, "copies of natsaga's streams and bucket (3 on a 3-node cluster)")
	fs.DurationVar(&c.ackWait, "ack-wait", 5*time.Second, "redelivery delay of a reply the coordinator took and never acted on (1s to 1h)")
	fs.DurationVar(&c.retention, "retention", coordinator.DefaultRetention, "how long a finished saga stays queryable (failed ones stay until retried); negative: for ever")
	fs.DurationVar(&c.leaseTTL, "lease-ttl", coordinator.DefaultLeaseTTL, "how long the lease lasts unless renewed: a standby coordinator takes over about this long after the active one's last renewal, renewed every third of it (1s to 1h)")
	fs.IntVar(&c.batch, "command-batch", messages.MaxBatch, "most commands of one step sent in one message to a role whose agents read batches; 1: every command alone")
	fs.IntVar(&c.maxActive, "max-active", defaultMaxActive(), "most sagas in flight; a start beyond is answered \"busy\"; negative: no limit. The default is what a quarter of the memory limit holds at 8 KiB a saga")
	fs.Int64Var(&c.maxDefinitionBytes, "max-definition-bytes", coordinator.DefaultMaxDefinitionBytes, "most bytes of definitions held, every version registered of each, as stored; a registration that would pass it is refused; those given at start and those stored are always held; negative: no limit")
	fs.Int64Var(&c.maxActiveBytes, "max-active-bytes", defaultMaxActiveBytes(), "most bytes the sagas in flight hold (their contexts, the step outputs merged into them, and their histories, as encoded; counted approximately); a start that would pass it is answered \"busy\", unless no saga is in flight; sagas recovered over it are all recovered, and starts answered busy until they hold less; negative: no limit. The default is a quarter of the memory limit")
	c.observe.Register(fs, getenv)
	if err := cli.Parse(fs, args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if err := c.check(); err != nil {
		return c, err
	}
	if err := c.conn.Check(); err != nil {
		return c, err
	}
	defs, err := definitions(c.defsFile)
	if err != nil {
		return c, err
	}
	c.defs = defs
	return c, c.observe.Validate()
}

// check returns an error naming the first flag out of its range. The
// library's options read 0 as "the default"; a flag given 0 is refused
// instead, since its default is shown.
// maxWait bounds -ack-wait and -lease-ttl: a reply redelivered, or a
// standby taking over, an hour late is already no use to a simulation.
const maxWait = time.Hour

func (c *config) check() error {
	switch {
	case c.replicas < 1 || c.replicas > 5:
		return fmt.Errorf("-replicas %d: between 1 and 5", c.replicas)
	case c.ackWait < time.Second || c.ackWait > maxWait:
		return fmt.Errorf("-ack-wait %s: between 1s and %s", c.ackWait, maxWait)
	case c.leaseTTL < time.Second || c.leaseTTL > maxWait:
		return fmt.Errorf("-lease-ttl %s: between 1s and %s", c.leaseTTL, maxWait)
	case c.retention >= 0 && c.retention < time.Second:
		return fmt.Errorf("-retention %s: at least 1s, or negative to keep finished sagas for ever", c.retention)
	case c.batch < 1 || c.batch > messages.MaxBatch:
		return fmt.Errorf("-command-batch %d: between 1 and %d", c.batch, messages.MaxBatch)
	case c.maxActive == 0:
		return errors.New("-max-active 0: a positive count, or negative for no limit")
	case c.maxActiveBytes == 0:
		return errors.New("-max-active-bytes 0: a positive number of bytes, or negative for no limit")
	case c.maxDefinitionBytes == 0:
		return errors.New("-max-definition-bytes 0: a positive number of bytes, or negative for no limit")
	}
	return nil
}

// noDefinitions is the -definitions value that starts the coordinator with
// no sagas of its own.
const noDefinitions = "none"

// definitions returns the sagas of file, the flood sagas when file is
// empty, and none for noDefinitions. It returns an error naming the file
// and, for a bad definition, the definition and the field.
func definitions(file string) ([]saga.Definition, error) {
	switch file {
	case "":
		return flood.Definitions(), nil
	case noDefinitions:
		return nil, nil
	}
	_, defs, err := cli.ReadDefinitions(file)
	if err != nil {
		return nil, cli.BadFlag(fmt.Errorf("-definitions %w", err))
	}
	return defs, nil
}

func run(ctx context.Context, c config, getenv func(string) string, log *slog.Logger) error {
	tp, flush, err := cli.StartTracing(ctx, "natsaga-coordinator", getenv, log)
	if err != nil {
		return err
	}
	defer flush()
	defs := c.defs
	// Metrics and health are served from the start, so that /livez
	// answers while the program waits for NATS; they are kept only when
	// served: the engine's loop then does no work for them.
	reg, health := metrics.NewRegistry(), cli.NewHealth(nil, nil)
	var observer *metrics.Coordinator
	var metadata map[string]string
	if c.observe.MetricsAddr != "" {
		if observer, err = metrics.NewCoordinator(reg); err != nil {
			return err
		}
		observer.Known(defs)
		bound, stop, err := cli.ServeMetrics(ctx, c.observe.MetricsAddr, "coordinator", reg, health.Ready, log)
		if err != nil {
			return err
		}
		defer stop()
		// Announced, so that `natsaga services` and discovery find it.
		metadata = map[string]string{"metrics": bound}
	}
	nc, err := c.conn.Connect(ctx, "natsaga-coordinator", log)
	if err != nil {
		return err
	}
	defer cli.Drain(nc, 5*time.Second)
	opts := coordinator.Options{
		Definitions: defs, Replicas: c.replicas, AckWait: c.ackWait, Retention: c.retention, LeaseTTL: c.leaseTTL,
		MaxActive: c.maxActive, MaxActiveBytes: c.maxActiveBytes, MaxDefinitionBytes: c.maxDefinitionBytes, CommandBatch: c.batch, Logger: log, Metadata: metadata,
	}
	if observer != nil {
		opts.Observer = observer
	}
	if tp != nil {
		opts.TracerProvider = tp
	}
	co, err := coordinator.New(nc, opts)
	if err != nil {
		return err
	}
	health.Set(nc, co.Health)
	return co.Run(ctx)
}

func main() { os.Exit(mainCode(os.Args[1:], os.Getenv, os.Stderr)) }

func mainCode(args []string, getenv func(string) string, stderr io.Writer) int {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return cli.UsageCodeFor(args, err, stderr)
	}
	return cli.ServeObserved(stderr, "coordinator", c.observe, func(ctx context.Context, log *slog.Logger) error {
		return run(ctx, c, getenv, log)
	})
}

// The metrics are told everything the coordinator reports.
var (
	_ coordinator.MessageObserver    = (*metrics.Coordinator)(nil)
	_ coordinator.RecordObserver     = (*metrics.Coordinator)(nil)
	_ coordinator.RetryObserver      = (*metrics.Coordinator)(nil)
	_ coordinator.BytesObserver      = (*metrics.Coordinator)(nil)
	_ coordinator.DefinitionObserver = (*metrics.Coordinator)(nil)
)
