// Package agentmain is the main function of an agent program: one role of
// a model, served by one process, with everything natsaga's own agent
// programs (cmd/household-agent and the others) have around the handlers.
// A model's agent program is then a few lines:
//
//	func main() {
//		os.Exit(agentmain.Main(agentmain.Role{Name: "depot", Steps: steps, Serial: true}))
//	}
//
// The program takes the connection flags of every natsaga program (-nats,
// -user and -password, -creds, -nkey, -tls-ca, -tls-cert, -tls-key,
// -inbox-prefix, or NATS_URL and the other NATS_ variables, and
// -connect-wait, -max-reconnects, -reconnect-wait), the agent's
// (-name, -concurrency, -ack-wait, -replicas, -record-values) and the
// operator's (-log-level, -log-format, -metrics-addr with /metrics, /livez
// and /readyz, -healthcheck for a container's health check), traces to
// OTLP when OTEL_TRACES_EXPORTER=otlp, waits for its server, and drains on
// SIGINT or SIGTERM. -h lists the flags.
package agentmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/metrics"
	"github.com/natsaga/natsaga/participant"
)

// Role is what an agent program serves: one role of a model.
type Role struct {
	// Name is the role (participant.Options.Role); the program calls
	// itself "<Name>-agent" in its logs, traces and connection name.
	Name string
	// Steps are the steps the role runs.
	Steps []agent.Step
	// Serial runs the role one copy at a time, in the order the
	// coordinator released its commands (participant.Options.Serial).
	Serial bool
	// Flags, when set, adds the role's own flags to fs (an opening
	// balance, say) before the arguments are parsed. A flag.Value that
	// refuses a bad value makes it a usage error; Init, Serve and
	// Metrics run after the parse and may read the values.
	Flags func(fs *flag.FlagSet)
	// Init, when set, seeds the role's state once its store opens
	// (participant.Options.Init).
	Init func(ctx context.Context, s agent.Seeder) error
	// Serve, when set, runs beside the agent on its connection until ctx
	// ends: the answers to the model's own queries, say. It starts once
	// Init has seeded the role's state, so that its answers never see the
	// state without its opening values. An error it returns stops the
	// program.
	Serve func(ctx context.Context, nc *nats.Conn, log *slog.Logger) error
	// Metrics, when set, registers the role's own metrics beside the
	// agent's counters, served with them on -metrics-addr.
	Metrics func(reg prometheus.Registerer, a *participant.Agent, log *slog.Logger) error
}

// Main runs r's program with the process's arguments and environment,
// until SIGINT or SIGTERM, and returns its exit code for os.Exit: 0 after
// a clean stop (or -h), 1 when the agent failed, 2 for bad arguments.
func Main(r Role) int { return Run(r, os.Args[1:], os.Getenv, os.Stderr) }

// Run is [Main] with the arguments (without the program's name), the
// environment and the standard error given.
func Run(r Role, args []string, getenv func(string) string, stderr io.Writer) int {
	c, err := parse(r, args, getenv, stderr)
	if err != nil {
		return cli.UsageCodeFor(args, err, stderr)
	}
	process := r.Name + "-agent"
	return cli.ServeObserved(stderr, process, c.observe, func(ctx context.Context, log *slog.Logger) error {
		tp, flush, err := cli.StartTracing(ctx, "natsaga-"+process, getenv, log)
		if err != nil {
			return err
		}
		defer flush()
		c.opts.TracerProvider = tp
		return serve(ctx, r, c, log)
	})
}

// Serve parses args as [Run] does and serves r until ctx ends, logging to
// log: the program without its process, for a test or for a program that
// runs several roles. It does not trace, and it returns an error for bad
// arguments, -h included.
func Serve(ctx context.Context, r Role, args []string, getenv func(string) string, log *slog.Logger) error {
	c, err := parse(r, args, getenv, io.Discard)
	if err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return serve(ctx, r, c, log)
}

// config is a parsed program.
type config struct {
	conn    cli.Conn
	observe cli.Observe
	opts    participant.Options
}

// parse parses args for r's program, with defaults from getenv, writing
// usage and errors to stderr.
func parse(r Role, args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{opts: participant.Options{Role: r.Name, Steps: r.Steps, Serial: r.Serial, Init: r.Init}}
	fs := flag.NewFlagSet(r.Name+"-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.conn.Register(fs, getenv)
	o := &c.opts
	fs.StringVar(&o.Name, "name", "", "agent name in logs and statistics (default <role>-<pid>-<random>)")
	fs.IntVar(&o.Concurrency, "concurrency", participant.DefaultConcurrency, "commands handled at once (a serial role applies its commands one batch at a time, whatever this says)")
	fs.DurationVar(&o.AckWait, "ack-wait", 5*time.Second,
		"redelivery delay of a command a copy took and never answered: the role's, shared by every copy (the copy started last sets it; 1s to 1h)")
	fs.IntVar(&o.Replicas, "replicas", 1, "copies of the role's state and record streams, when this agent creates them (a cluster's servers at most)")
	fs.IntVar(&o.MaxRecordValues, "record-values", kvlog.DefaultMaxValues,
		"barrier records held in memory; older ones are read from the server when a command needs one")
	fs.BoolVar(&o.SkipCopiesCheck, "skip-copies-check", false,
		"start without asking the role's running copies their wire version and serial (micro INFO, which any agent may forge): only when every copy runs one build")
	if r.Flags != nil {
		r.Flags(fs)
	}
	c.observe.Register(fs, getenv)
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case o.Concurrency < 1 || o.Concurrency > participant.MaxConcurrency:
		return nil, fmt.Errorf("-concurrency %d: 1 to %d", o.Concurrency, participant.MaxConcurrency)
	case o.AckWait < minAckWait || o.AckWait > maxAckWait:
		return nil, fmt.Errorf("-ack-wait %s: between %s and %s", o.AckWait, minAckWait, maxAckWait)
	case o.Replicas < 1 || o.Replicas > maxReplicas:
		return nil, fmt.Errorf("-replicas %d: 1 to %d", o.Replicas, maxReplicas)
	case o.MaxRecordValues < 1:
		return nil, fmt.Errorf("-record-values %d: at least 1", o.MaxRecordValues)
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("%s-agent: %w", r.Name, err)
	}
	if err := c.conn.Check(); err != nil {
		return nil, err
	}
	return c, c.observe.Validate()
}

// minAckWait is the shortest -ack-wait: a command's handler, its stored
// write and its answer take milliseconds, and one redelivered before they
// end runs twice for nothing (the barrier absorbs it) at every copy.
// maxAckWait is the longest: a command redelivered an hour after its copy
// died is already no use to a simulation. maxReplicas is JetStream's most
// copies of a stream.
const (
	minAckWait  = time.Second
	maxAckWait  = time.Hour
	maxReplicas = 5
)

// serve runs the parsed program until ctx ends.
func serve(ctx context.Context, r Role, c *config, log *slog.Logger) error {
	// Metrics and health are served from the start, so that /livez
	// answers while the program waits for NATS.
	reg, health := metrics.NewRegistry(), cli.NewHealth(nil, nil)
	opts := c.opts
	if c.observe.MetricsAddr != "" {
		bound, stop, err := cli.ServeMetrics(ctx, c.observe.MetricsAddr, r.Name+"-agent", reg, health.Ready, log)
		if err != nil {
			return err
		}
		defer stop()
		// Announced, so that `natsaga services` and discovery find it.
		opts.Metadata = map[string]string{"metrics": bound}
	}
	nc, err := c.conn.Connect(ctx, r.Name+"-agent", log)
	if err != nil {
		return err
	}
	defer cli.Drain(nc, 5*time.Second)
	opts.Logger = log
	// seeded is closed once Init has seeded the role's state, or at once
	// without Init: Serve starts then, so that the role's own answers never
	// see the state before its opening values.
	seeded := make(chan struct{})
	if init := opts.Init; init != nil {
		var once sync.Once
		opts.Init = func(ctx context.Context, s agent.Seeder) error {
			if err := init(ctx, seedLog{s, log}); err != nil {
				return err
			}
			once.Do(func() { close(seeded) })
			return nil
		}
	} else {
		close(seeded)
	}
	a, err := participant.New(nc, opts)
	if err != nil {
		return err
	}
	if c.observe.MetricsAddr != "" {
		if err := metrics.RegisterAgent(reg, a.Stats); err != nil {
			return err
		}
		if r.Metrics != nil {
			if err := r.Metrics(reg, a, log); err != nil {
				return err
			}
		}
	}
	health.Set(nc, a.Health)
	if r.Serve == nil {
		return a.Run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		select {
		case <-seeded:
		case <-ctx.Done():
			served <- nil
			return
		}
		err := r.Serve(ctx, nc, log)
		if err != nil {
			cancel()
		}
		served <- err
	}()
	err = a.Run(ctx)
	cancel()
	return errors.Join(err, <-served)
}

// seedLog is a role's store as its Init sees it: a value that is not
// stored because the key has one already is said so, since the flag or
// default it came from is then not what the role holds.
type seedLog struct {
	agent.Seeder
	log *slog.Logger
}

func (s seedLog) Init(ctx context.Context, key string, v any) (bool, error) {
	stored, err := s.Seeder.Init(ctx, key, v)
	if err == nil && !stored {
		s.log.Info("state kept: the key has a value already, so the one given at start is not stored", "key", key)
	}
	return stored, err
}
