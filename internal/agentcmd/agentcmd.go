// Package agentcmd is the program behind cmd/household-agent,
// cmd/government-agent, cmd/insurer-agent and cmd/contractor-agent: one
// flood role served by one process.
package agentcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/metrics"
	"github.com/natsaga/natsaga/participant"
)

// Config is an agent process's configuration.
type Config struct {
	Role        string
	Conn        cli.Conn
	Name        string
	Concurrency int
	AckWait     time.Duration
	Replicas    int
	// RecordValues bounds the barrier records held in memory
	// (participant.Options.MaxRecordValues).
	RecordValues int
	// Ledger is the opening balance, in cents, of the government's budget
	// or the insurer's fund, used the first time the role's store opens.
	Ledger  int64
	Observe cli.Observe
	// TracerProvider, when set, traces the commands the agent handles.
	TracerProvider trace.TracerProvider
}

// DefaultLedger is the opening ledger of each role that holds money.
var DefaultLedger = map[string]int64{flood.Government: 1_000_000_00, flood.Insurer: 2_000_000_00}

// ParseFlags parses args for role's agent, with defaults from getenv.
func ParseFlags(role string, args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	c := Config{Role: role}
	fs := flag.NewFlagSet(role+"-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.Conn.Register(fs, getenv)
	fs.StringVar(&c.Name, "name", "", "agent name in logs and statistics (default <role>-<pid>-<random>)")
	fs.IntVar(&c.Concurrency, "concurrency", participant.DefaultConcurrency, "commands handled at once")
	fs.DurationVar(&c.AckWait, "ack-wait", 5*time.Second, "redelivery delay of a command this agent took and never answered")
	fs.IntVar(&c.Replicas, "replicas", 1, "copies of the role's state stream, when this agent creates it")
	fs.IntVar(&c.RecordValues, "record-values", kvlog.DefaultMaxValues,
		"barrier records held in memory; older ones are read from the server when a command needs one")
	if def, ok := DefaultLedger[role]; ok {
		fs.Int64Var(&c.Ledger, "ledger", def, "opening balance in cents (budget or fund), applied once when the store is new")
	}
	c.Observe.Register(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if c.Ledger < 0 {
		return c, fmt.Errorf("-ledger %d: must not be negative", c.Ledger)
	}
	if c.RecordValues < 1 {
		return c, fmt.Errorf("-record-values %d: at least 1", c.RecordValues)
	}
	return c, c.Observe.Validate()
}

// Run serves the role until ctx is cancelled, then drains and returns nil.
func Run(ctx context.Context, c Config, log *slog.Logger) error {
	steps, err := flood.Steps(c.Role)
	if err != nil {
		return err
	}
	// Metrics and health are served from the start, so that /livez
	// answers while the program waits for NATS.
	reg, health := metrics.NewRegistry(), cli.NewHealth(nil, nil)
	if c.Observe.MetricsAddr != "" {
		stop, err := cli.ServeMetrics(ctx, c.Observe.MetricsAddr, reg, health.Ready, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	nc, err := c.Conn.Connect(ctx, c.Role+"-agent", log)
	if err != nil {
		return err
	}
	defer cli.Drain(nc, 5*time.Second)
	opts := participant.Options{Role: c.Role, Steps: steps, Name: c.Name, Concurrency: c.Concurrency,
		AckWait: c.AckWait, Replicas: c.Replicas, MaxRecordValues: c.RecordValues, Serial: flood.Serial(c.Role), Logger: log}
	if c.TracerProvider != nil {
		opts.TracerProvider = c.TracerProvider
	}
	if _, ok := DefaultLedger[c.Role]; ok {
		opts.Init = flood.InitLedger(c.Ledger)
	}
	a, err := participant.New(nc, opts)
	if err != nil {
		return err
	}
	if c.Observe.MetricsAddr != "" {
		if err := RegisterMetrics(reg, a, log); err != nil {
			return err
		}
	}
	health.Set(nc, a.Health)
	return runWithQueries(ctx, a, nc, c.Role)
}

// runWithQueries runs a and, beside it, the answers to flood's state query
// (flood.StateSubject), until ctx ends or either fails.
func runWithQueries(ctx context.Context, a *participant.Agent, nc *nats.Conn, role string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	queries := make(chan error, 1)
	go func() {
		err := participant.ServeQueries(ctx, nc, role, flood.StateSubject(role), flood.AnswerState)
		if err != nil {
			cancel()
		}
		queries <- err
	}()
	err := a.Run(ctx)
	cancel()
	return errors.Join(err, <-queries)
}

// RegisterMetrics registers with reg a's counters and, for a role that
// holds money, its ledger balance, read from a's store at each scrape
// (absent until Run has opened it).
func RegisterMetrics(reg *prometheus.Registry, a *participant.Agent, log *slog.Logger) error {
	if err := metrics.RegisterAgent(reg, a.Stats); err != nil {
		return err
	}
	role := a.Stats().Role
	if _, ok := DefaultLedger[role]; ok {
		read := func(ctx context.Context) (int64, error) {
			st := a.SharedStore()
			if st == nil {
				return 0, errStoreNotOpen
			}
			var l flood.Ledger
			if _, err := st.Get(ctx, flood.LedgerKey, &l); err != nil {
				return 0, err
			}
			return l.Balance, nil
		}
		if err := metrics.RegisterLedger(reg, role, read, log); err != nil {
			return err
		}
	}
	return nil
}

// errStoreNotOpen is why a ledger is not read before the agent runs.
var errStoreNotOpen = errors.New("the agent's store is not open yet")

// Main is the whole program: it parses args, runs until SIGINT or SIGTERM,
// and returns the exit code.
func Main(role string, args []string, getenv func(string) string, stderr io.Writer) int {
	c, err := ParseFlags(role, args, getenv, stderr)
	if err != nil {
		return cli.UsageCode(err, stderr)
	}
	return cli.ServeObserved(stderr, role+"-agent", c.Observe, func(ctx context.Context, log *slog.Logger) error {
		tp, flush, err := cli.StartTracing(ctx, "natsaga-"+role+"-agent", getenv, log)
		if err != nil {
			return err
		}
		defer flush()
		c.TracerProvider = tp
		return Run(ctx, c, log)
	})
}
