package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/cmd/natsaga-bench/internal/baseline"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// childEnv names the environment variable that makes the bench binary run
// as one of the processes of the system under test instead of as the
// benchmark: its value is the role.
const childEnv = "NATSAGA_BENCH_CHILD"

// The roles a child process can play.
const (
	roleServer        = "server"
	roleCoordinator   = "coordinator"
	roleAgent         = "agent"
	roleBaseCoord     = "baseline-coordinator"
	roleBaseAgent     = "baseline-agent"
	heapSubject       = "natsagabench.heap"
	childConnectWait  = 20 * time.Second
	childShutdownWait = 10 * time.Second
)

// heapStats is a coordinator child's answer on heapSubject: its live heap
// right after a garbage collection.
type heapStats struct {
	HeapAlloc uint64 `json:"heap_alloc"`
}

// childConfig is a child process's configuration, from its flags.
type childConfig struct {
	role        string
	conn        cli.Conn
	cpuProfile  string
	storeDir    string
	port        int
	name        string
	concurrency int
	latency     time.Duration
	workers     int
}

func parseChildFlags(role string, args []string, stderr io.Writer) (childConfig, error) {
	c := childConfig{role: role}
	fs := flag.NewFlagSet("natsaga-bench "+role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.conn.URL, "nats", "", "NATS server URL")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of this process to this file")
	fs.StringVar(&c.storeDir, "store", "", "server: JetStream directory")
	fs.IntVar(&c.port, "port", -1, "server: port")
	fs.StringVar(&c.name, "name", "", "agent name")
	fs.IntVar(&c.concurrency, "concurrency", 0, "agent: commands handled at once")
	fs.DurationVar(&c.latency, "latency", 0, "agent: simulated latency of each step")
	fs.IntVar(&c.workers, "workers", 0, "baseline coordinator: workers")
	if err := cli.Parse(fs, args); err != nil {
		return c, err
	}
	c.conn.Wait = childConnectWait
	return c, nil
}

// childMain runs the bench binary as one process of the system under test,
// until SIGTERM, and returns the exit code.
func childMain(role string, args []string, stderr io.Writer) int {
	c, err := parseChildFlags(role, args, stderr)
	if err != nil {
		return cli.UsageCode(err, stderr)
	}
	return cli.Serve(stderr, "natsaga-bench-"+role, "warn", func(ctx context.Context, log *slog.Logger) error {
		if c.cpuProfile != "" {
			f, err := os.Create(c.cpuProfile)
			if err != nil {
				return fmt.Errorf("cpu profile: %w", err)
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return fmt.Errorf("cpu profile: %w", err)
			}
			defer pprof.StopCPUProfile()
		}
		return runChild(ctx, c, log)
	})
}

func runChild(ctx context.Context, c childConfig, log *slog.Logger) error {
	if c.role == roleServer {
		ns, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: c.port, StoreDir: c.storeDir})
		if err != nil {
			return err
		}
		<-ctx.Done()
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil
	}
	nc, err := c.conn.Connect(ctx, "natsaga-bench-"+c.role, log)
	if err != nil {
		return err
	}
	defer cli.Drain(nc, childShutdownWait)
	switch c.role {
	case roleCoordinator:
		// The benchmark holds as many sagas as it is told to: no admission limit.
		co, err := coordinator.New(nc, coordinator.Options{Definitions: []saga.Definition{benchDefinition()}, MaxActive: -1, MaxActiveBytes: -1, Logger: log})
		if err != nil {
			return err
		}
		return runCoordinator(ctx, nc, co.Run, co.Ready())
	case roleBaseCoord:
		co, err := baseline.NewCoordinator(nc, baseline.CoordinatorOptions{Workers: c.workers, Logger: log})
		if err != nil {
			return err
		}
		return runCoordinator(ctx, nc, co.Run, co.Ready())
	case roleAgent:
		a, err := participant.New(nc, participant.Options{Role: benchRole, Name: c.name, Steps: benchSteps(c.latency),
			Concurrency: c.concurrency, Logger: log})
		if err != nil {
			return err
		}
		return a.Run(ctx)
	case roleBaseAgent:
		return baseline.RunAgent(ctx, nc, baseline.AgentOptions{Name: c.name, Concurrency: c.concurrency,
			Latency: c.latency, Logger: log})
	}
	return fmt.Errorf("unknown role %q", c.role)
}

// runCoordinator runs a coordinator and, once it is ready, answers heap
// queries on heapSubject, which also tell the benchmark it is ready.
func runCoordinator(ctx context.Context, nc *nats.Conn, run func(context.Context) error, ready <-chan struct{}) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- run(ctx) }()
	select {
	case <-ready:
	case err := <-errc:
		if err == nil {
			err = errors.New("coordinator stopped before it was ready")
		}
		return err
	}
	sub, err := nc.Subscribe(heapSubject, func(m *nats.Msg) {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		data, _ := json.Marshal(heapStats{HeapAlloc: ms.HeapAlloc})
		_ = m.Respond(data)
	})
	if err != nil {
		cancel()
		<-errc
		return fmt.Errorf("heap subscription: %w", err)
	}
	defer sub.Unsubscribe()
	return <-errc
}
