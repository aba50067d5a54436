// Command natsaga-bench measures natsaga as it runs: an embedded nats-server
// with JetStream (file storage, in a temporary directory), the coordinator
// and N agent copies, each a separate OS process, driven by a closed-loop
// load generator that keeps K three-step sagas in flight and waits for each
// saga's terminal event. In the same run it measures a baseline, the bare
// durable pattern of package internal/baseline beside it (JetStream work
// queues for commands and replies, a KV compare-and-swap per transition,
// JSON), with
// the same processes, the same load and the same machine, so that the
// headline, their ratio, holds on a noisy machine.
//
// For each configuration it reports sagas per second, the per-saga latency
// p50 and p99, the CPU seconds per 1,000 sagas of the server, coordinator
// and agent processes, and the coordinator's live heap per in-flight saga.
// With -hold N it also holds N sagas in flight, gives the coordinator's heap
// per saga, and times a new coordinator's recovery of them. BENCHMARKS.md
// describes the method and gives the figures.
//
// Usage:
//
//	natsaga-bench [-inflight 64,1024] [-duration 10s] [-warmup 3s] [-agents 1]
//	              [-concurrency 64] [-latency 0] [-runs 1] [-modes baseline,natsaga]
//	              [-hold 0] [-cpuprofile DIR] [-json] [-v]
//
// The processes are this binary run again in another role (the environment
// variable NATSAGA_BENCH_CHILD names it).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/natsaga/natsaga/internal/cli"
)

// Modes of a measurement.
const (
	modeNatsaga  = "natsaga"
	modeBaseline = "baseline"
)

// config is the benchmark's configuration.
type config struct {
	inflight    []int
	agents      []int
	modes       []string
	duration    time.Duration
	warmup      time.Duration
	latency     time.Duration
	concurrency int
	workers     int
	runs        int
	hold        int
	timeout     time.Duration
	cpuProfile  string
	json        bool
	verbose     bool
	logFormat   string
	// self is the binary run as the child processes.
	self string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("natsaga-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inflight := fs.String("inflight", "64,1024", "sagas kept in flight (comma-separated list: one configuration each)")
	agents := fs.String("agents", "1", "agent copies, as separate processes (comma-separated list)")
	modes := fs.String("modes", "baseline,natsaga", "what to measure: baseline, natsaga or both")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measurement window of each configuration")
	fs.DurationVar(&c.warmup, "warmup", 3*time.Second, "load before the measurement window")
	fs.DurationVar(&c.latency, "latency", 0, "simulated latency of each step in the agents")
	fs.IntVar(&c.concurrency, "concurrency", 64, "commands each agent copy handles at once (both modes)")
	fs.IntVar(&c.workers, "baseline-workers", 256, "worker goroutines of the baseline coordinator")
	fs.IntVar(&c.runs, "runs", 1, "repetitions of every configuration")
	fs.IntVar(&c.hold, "hold", 0, "also measure natsaga's coordinator heap with this many sagas held in flight (agents stopped), and how long a new coordinator takes to recover them")
	fs.DurationVar(&c.timeout, "saga-timeout", 60*time.Second, "how long one saga may take before it counts as an error")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of every child process into this directory")
	fs.BoolVar(&c.json, "json", false, "print one JSON object per configuration and run")
	fs.BoolVar(&c.verbose, "v", false, "child processes log to stderr")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	if err := cli.Parse(fs, args); err != nil {
		return c, err
	}
	if _, err := cli.NewLogger(io.Discard, "info", c.logFormat); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var err error
	if c.inflight, err = intList("-inflight", *inflight, 1, maxInflight); err != nil {
		return c, err
	}
	if c.agents, err = intList("-agents", *agents, 1, maxAgents); err != nil {
		return c, err
	}
	for _, m := range strings.Split(*modes, ",") {
		m = strings.TrimSpace(m)
		if m != modeNatsaga && m != modeBaseline {
			return c, fmt.Errorf("-modes: %q is neither %s nor %s", m, modeBaseline, modeNatsaga)
		}
		if !slices.Contains(c.modes, m) {
			c.modes = append(c.modes, m)
		}
	}
	switch {
	case c.duration <= 0 || c.duration > 24*time.Hour || c.timeout <= 0 || c.timeout > time.Hour:
		return c, errors.New("-duration must be above 0 and at most 24h, -saga-timeout above 0 and at most 1h")
	case c.warmup < 0 || c.warmup > time.Hour || c.latency < 0 || c.latency > time.Minute:
		return c, errors.New("-warmup must be 0 to 1h, -latency 0 to 1m")
	case c.concurrency < 1 || c.concurrency > maxConcurrency || c.workers < 1 || c.workers > maxConcurrency:
		return c, fmt.Errorf("-concurrency and -baseline-workers must be 1 to %d", maxConcurrency)
	case c.runs < 1 || c.runs > maxRuns || c.hold < 0 || c.hold > maxHold:
		return c, fmt.Errorf("-runs must be 1 to %d, -hold 0 to %d", maxRuns, maxHold)
	}
	return c, nil
}

// The bounds of the flags: a load this machine's kind can run, so that a
// slip of the keyboard (-agents 1000) does not start a thousand processes.
const (
	maxInflight    = 100_000
	maxAgents      = 32
	maxConcurrency = 4096
	maxRuns        = 1000
	maxHold        = 1_000_000
)

func intList(flagName, s string, least, most int) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < least || n > most {
			return nil, fmt.Errorf("%s: %q is not an integer from %d to %d", flagName, f, least, most)
		}
		out = append(out, n)
	}
	return out, nil
}

func main() {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(childMain(role, os.Args[1:], os.Stderr))
	}
	os.Exit(mainCode(os.Args[1:], os.Stdout, os.Stderr))
}

func mainCode(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return cli.UsageCode(err, stderr)
	}
	if c.self, err = os.Executable(); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, err := cli.NewLogger(stderr, "info", c.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	if err := run(ctx, c, stdout, stderr, log); err != nil {
		log.Error("benchmark failed", "err", err)
		return 1
	}
	return 0
}
