// Command floodsim runs a flood simulation on natsaga: seeded households
// start subsidy, insurance and elevation sagas as floods strike, a tick
// clock drives them, and the run ends with a report and a check of the
// invariants (no saga lost or failed, no ledger overspent, money spent only
// by completed sagas).
//
// By default it runs the whole system itself: an embedded nats-server with
// JetStream, and the coordinator and the agents as separate OS processes,
// built from this repository. With -spawn=false it drives a system that is
// already running, at -nats.
//
// Usage:
//
//	go run ./cmd/floodsim [-households 200] [-ticks 30] [-seed 1] [-json report.json] [-html report.html] [-outcomes log.jsonl] [-v]
//	floodsim -nats nats://host:4222 -spawn=false -expect-agents 6 [-json report.json]
//
// The exit code is 0 when the invariants hold (and, with
// -require-all-outcomes, every outcome was seen), 1 when they do not or
// the run failed (a tick that made no progress, no command it waits for
// answered, within -tick-wait included: the run can no longer be
// reproduced), 2 for bad flags (an
// output file, -json, -html or -outcomes, that cannot be written included:
// checked before anything starts), 130 when interrupted, and 141 when
// its standard output is closed before the run ends (floodsim | head): it
// stops as it does when interrupted, its programs and its temporary
// directory with it.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/messages"
)

// config is floodsim's configuration, from its flags.
type config struct {
	conn cli.Conn
	// spawn runs the embedded server, the coordinator and the agents.
	spawn bool
	// expectAgents is how many agents must answer before the run starts;
	// 0 means the number spawned, or none to wait for without -spawn.
	expectAgents int
	// agentWait bounds the wait for the coordinator and the agents to
	// answer before the run, and for a role's state query, which is asked
	// again meanwhile, as for an agent restarting.
	agentWait time.Duration

	scenario flood.ScenarioOptions
	// budget and fund override the scenario's opening ledgers (spawn only).
	budget, fund int64

	// copies is how many processes of each role to spawn.
	copies map[string]int
	// dataDir keeps the server's data and the logs; "" means a temporary
	// directory, removed at exit.
	dataDir string
	// binDir holds prebuilt binaries; "" means build them into buildDir.
	binDir, buildDir string
	// metricsAddr, when set, is where the spawned coordinator serves its
	// metrics and health, the agents on the ports after it
	// (metricsAddrs).
	metricsAddr string

	tickWait      time.Duration
	maxExtraTicks int
	requireAll    bool
	jsonPath      string
	htmlPath      string
	outcomesPath  string
	plan          bool
	verbose       bool
	// logFormat is text or json, for floodsim's logs and the spawned
	// processes'.
	logFormat string
	// tracerProvider, when set, traces the start requests.
	tracerProvider trace.TracerProvider
}

// roles returns the agent roles, in the order they are started and
// reported.
func roles() []string {
	return []string{flood.Household, flood.Government, flood.Insurer, flood.Contractor}
}

// parseFlags parses floodsim's command line, with defaults from getenv
// (NATS_URL, NATS_USER, NATS_PASSWORD, NATS_INBOX_PREFIX), writing usage
// and flag errors to stderr. It returns flag.ErrHelp for -h, and an error
// for an unknown, malformed or inconsistent flag.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := config{copies: map[string]int{}}
	fs := flag.NewFlagSet("floodsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.conn.Register(fs, getenv)
	fs.BoolVar(&c.spawn, "spawn", true, "run an embedded nats-server, the coordinator and the agents (-nats is then ignored); false drives the system at -nats, and refuses the flags of a system it starts (-budget, -fund, -bin, -<role>-agents, -metrics-addr)")
	fs.IntVar(&c.expectAgents, "expect-agents", 0, "wait until this many agents answer before starting (default: the number spawned)")
	fs.DurationVar(&c.agentWait, "agent-wait", 60*time.Second, "how long to wait for the coordinator and the agents to answer, before the run and for each role's state query")
	fs.Int64Var(&c.scenario.Seed, "seed", 1, "scenario seed: the same seed, households and ticks plan the same sagas")
	fs.IntVar(&c.scenario.Households, "households", flood.DefaultHouseholds, "households in the flood plain")
	fs.IntVar(&c.scenario.Ticks, "ticks", flood.DefaultTicks, "ticks of simulation time with floods and needs")
	fs.Int64Var(&c.budget, "budget", 0, "government budget in cents, with -spawn (default: the scenario's, half its demand)")
	fs.Int64Var(&c.fund, "fund", 0, "insurer fund in cents, with -spawn (default: the scenario's)")
	// One household copy: its copies share the households, and each
	// reads again what the other wrote last, a direct get for most
	// commands; on two cores that costs more than the second copy brings
	// (BENCHMARKS.md, "One household copy"). The government's second copy
	// is the standby of a serial role, idle until the first stops.
	copies := map[string]*int{}
	for _, r := range []struct {
		role string
		n    int
	}{{flood.Household, 1}, {flood.Government, 2}, {flood.Insurer, 1}, {flood.Contractor, 1}} {
		copies[r.role] = fs.Int(r.role+"-agents", r.n, r.role+"-agent processes to spawn")
	}
	fs.StringVar(&c.dataDir, "data", "", "directory for the server's data and the processes' log, kept (default: a temporary directory, removed at exit)")
	fs.StringVar(&c.binDir, "bin", "", "directory of prebuilt coordinator and agent binaries (default: beside floodsim, else built from the checkout, else on PATH)")
	fs.StringVar(&c.buildDir, "build-dir", defaultBuildDir(), "where to build the binaries when -bin is not set")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "with -spawn: the coordinator serves metrics and health on this address, each agent on the next port, in the order spawned (port 0: each on a free port); floodsim logs every program's address")
	fs.DurationVar(&c.tickWait, "tick-wait", time.Minute, "longest wall-clock wait, while a tick is not quiet, without any due command answered; past it the run stops with an error, since it can no longer be reproduced")
	fs.IntVar(&c.maxExtraTicks, "max-extra-ticks", 20, "ticks past -ticks to let the last sagas end")
	fs.BoolVar(&c.requireAll, "require-all-outcomes", true, "fail unless every outcome (completion, each business rollback, timeout) was seen")
	fs.StringVar(&c.jsonPath, "json", "", "also write the report as JSON to this file")
	fs.StringVar(&c.htmlPath, "html", "", "also write the report as one self-contained HTML page, with plots, to this file")
	fs.StringVar(&c.outcomesPath, "outcomes", "", "write the outcome log to this file: one JSON line per saga, sorted by id (its SHA-256 is in the report)")
	fs.BoolVar(&c.plan, "plan", false, "print the scenario's plan (counts and the ledgers it is sized for) as JSON and exit")
	fs.BoolVar(&c.verbose, "v", false, "log the driver's details, and the spawned processes' logs, to stderr")
	fs.StringVar(&c.logFormat, "log-format", cmp.Or(getenv("NATSAGA_LOG_FORMAT"), "text"), "text or json, for floodsim's logs and the spawned processes' (env NATSAGA_LOG_FORMAT)")
	if err := cli.Parse(fs, args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for role, n := range copies {
		c.copies[role] = *n
	}
	if err := spawnOnly(fs, c.spawn); err != nil {
		return c, err
	}
	// 0 stands for the scenario's ledger when left out, so given it would
	// be taken for that without a word.
	var zero []string
	fs.Visit(func(f *flag.Flag) {
		if (f.Name == "budget" || f.Name == "fund") && f.Value.String() == "0" {
			zero = append(zero, "-"+f.Name+" 0")
		}
	})
	if len(zero) > 0 {
		return c, fmt.Errorf("%s: must be positive; leave it out for the scenario's", strings.Join(zero, ", "))
	}
	return c, c.validate()
}

// spawnOnly returns an error naming the flags given that only apply when
// floodsim starts the system itself, when it does not (-spawn=false): the
// system it drives was started with its own. For the flags that have one,
// it names the flag of the programs started elsewhere that does the same.
func spawnOnly(fs *flag.FlagSet, spawn bool) error {
	if spawn {
		return nil
	}
	var given, instead []string
	ledger := false
	fs.Visit(func(f *flag.Flag) {
		switch {
		case f.Name == "budget" || f.Name == "fund":
			given = append(given, "-"+f.Name)
			if !ledger {
				ledger = true
				instead = append(instead, "the government and insurer agents' -ledger")
			}
		case f.Name == "metrics-addr":
			given = append(given, "-"+f.Name)
			instead = append(instead, "the coordinator's and each agent's -metrics-addr")
		case f.Name == "bin" || strings.HasSuffix(f.Name, "-agents") && f.Name != "expect-agents":
			given = append(given, "-"+f.Name)
		}
	})
	if len(given) == 0 {
		return nil
	}
	msg := fmt.Sprintf("%s: only with -spawn, when floodsim starts the programs; with -spawn=false they are started elsewhere, each with its own flags",
		strings.Join(given, ", "))
	if len(instead) > 0 {
		msg += " (" + strings.Join(instead, "; ") + ")"
	}
	return errors.New(msg)
}

// maxCopies is the most processes floodsim starts for one role: each is a
// process of its own on this machine.
const maxCopies = 32

// validate returns an error naming every flag of c that is out of range.
func (c *config) validate() error {
	var errs []error
	// The scenario takes 0 for its defaults; floodsim's flags have
	// theirs already, so each is 1 to the scenario's most.
	for _, f := range []struct {
		name string
		n    int
	}{{"households", c.scenario.Households}, {"ticks", c.scenario.Ticks}} {
		if f.n < 1 || f.n > flood.MaxScenarioCount {
			errs = append(errs, fmt.Errorf("-%s %d: 1 to %d", f.name, f.n, flood.MaxScenarioCount))
		}
	}
	if err := flood.CheckScenarioSize(c.scenario.Households, c.scenario.Ticks); err != nil {
		errs = append(errs, fmt.Errorf("-households and -ticks: %w", err))
	}
	if _, err := cli.NewLogger(io.Discard, "info", c.logFormat); err != nil {
		errs = append(errs, err)
	}
	if c.expectAgents < 0 || c.budget < 0 || c.fund < 0 || c.maxExtraTicks < 0 {
		errs = append(errs, errors.New("-expect-agents, -budget, -fund and -max-extra-ticks must not be negative"))
	}
	if c.tickWait <= 0 || c.agentWait <= 0 {
		errs = append(errs, errors.New("-tick-wait and -agent-wait must be positive"))
	}
	if c.spawn {
		for _, r := range roles() {
			if c.copies[r] < 1 || c.copies[r] > maxCopies {
				errs = append(errs, fmt.Errorf("-%s-agents %d: 1 to %d", r, c.copies[r], maxCopies))
			}
		}
		if c.metricsAddr != "" {
			if _, err := c.metricsAddrs(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.binDir != "" {
			if fi, err := os.Stat(c.binDir); err != nil || !fi.IsDir() {
				errs = append(errs, fmt.Errorf("-bin %s: not a directory", messages.Quote(c.binDir)))
			}
		}
	}
	// The server the run drives, or, spawned, what floodsim's own
	// connection keeps of the flags (its waits, its inbox prefix; the
	// embedded server takes no credentials): checked before anything
	// starts.
	conn := c.conn
	if c.spawn {
		conn = conn.Embedded(cli.DefaultURL)
	}
	if err := conn.Check(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// metricsAddrs returns the -metrics-addr of each program c spawns: the
// coordinator's first, then the agents' in the order spawned, on the
// ports after it; all on port 0 when -metrics-addr's is.
func (c *config) metricsAddrs() ([]string, error) {
	host, p, err := net.SplitHostPort(c.metricsAddr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr %q: host:port: %w", c.metricsAddr, err)
	}
	port, err := strconv.Atoi(p)
	n := 1 + c.spawned()
	if err != nil || port < 0 || port > 0 && port+n-1 > 65535 {
		return nil, fmt.Errorf("-metrics-addr %q: a port from 0 to %d, for %d programs on the ports from it", c.metricsAddr, 65535-n+1, n)
	}
	addrs := make([]string, n)
	for i := range addrs {
		if port > 0 {
			p = strconv.Itoa(port + i)
		}
		addrs[i] = net.JoinHostPort(host, p)
	}
	return addrs, nil
}

// spawned is the number of agent processes c spawns.
func (c *config) spawned() int {
	n := 0
	for _, r := range roles() {
		n += c.copies[r]
	}
	return n
}

func defaultBuildDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "natsaga", "bin")
}

func main() { os.Exit(mainCode(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }

func mainCode(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if !errors.Is(err, cli.ErrPrinted) {
			fmt.Fprintln(stderr, "floodsim:", strings.ReplaceAll(err.Error(), "\n", "\nfloodsim: "))
		}
		return 2
	}
	// floodsim hosts the embedded nats-server, the busiest process of a
	// run, and the report's reads of every saga.
	cli.TuneGC(getenv)
	ctx, stop := cli.SignalContext()
	defer stop()
	ctx, stdout, stopOnPipe := stopOnClosedOutput(ctx, stdout)
	defer stopOnPipe()
	// Validated with the flags: tracing's own messages in the run's format.
	// At warn, as floodsim's log is: where the spans go is said below, as
	// floodsim says its other start-up lines.
	tlog, _ := cli.NewLogger(stderr, "warn", c.logFormat)
	tp, flush, err := cli.StartTracing(ctx, "floodsim", getenv, tlog.With("process", "floodsim", "pid", os.Getpid()))
	if err != nil {
		fmt.Fprintln(stderr, "floodsim:", err)
		return 1
	}
	defer flush()
	if tp != nil {
		c.tracerProvider = tp
		// -plan's output is JSON alone.
		if !c.plan {
			fmt.Fprintf(stdout, "floodsim: tracing on: spans go over OTLP/HTTP to %s\n", cli.TracesEndpoint(getenv))
		}
	}
	err = run(ctx, c, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.As(err, new(usageError)), errors.Is(err, cli.ErrBadFlag):
		fmt.Fprintln(stderr, "floodsim:", err)
		return 2
	case errors.Is(context.Cause(ctx), errOutputClosed):
		fmt.Fprintln(stderr, "floodsim: stopped:", errOutputClosed)
		return 141
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "floodsim: interrupted")
		return 130
	default:
		fmt.Fprintln(stderr, "floodsim:", err)
		return 1
	}
}

// errOutputClosed is the cause of a run stopped because its standard
// output was closed.
var errOutputClosed = errors.New("its standard output was closed")

// stopOnClosedOutput returns a context cancelled, with errOutputClosed,
// when a write to out finds its reader gone, and out wrapped to see it. Go
// otherwise ends the program at such a write to standard output, before
// it stops the programs it started and removes its temporary directory;
// with SIGPIPE asked for, the write fails with EPIPE instead. The signal
// itself says nothing of which descriptor broke (a connection the server
// refused raises it too), so only a failed write of out stops the run.
func stopOnClosedOutput(parent context.Context, out io.Writer) (context.Context, io.Writer, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	pipe := make(chan os.Signal, 1)
	signal.Notify(pipe, syscall.SIGPIPE)
	return ctx, &closedOutput{w: out, cancel: cancel}, func() {
		signal.Stop(pipe)
		cancel(nil)
	}
}

// closedOutput passes writes to w, and cancels the run when one finds
// w's reader gone.
type closedOutput struct {
	w      io.Writer
	cancel context.CancelCauseFunc
}

func (o *closedOutput) Write(p []byte) (int, error) {
	n, err := o.w.Write(p)
	if errors.Is(err, syscall.EPIPE) {
		o.cancel(errOutputClosed)
	}
	return n, err
}
