package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/cmd/natsaga-bench/internal/baseline"
	"github.com/natsaga/natsaga/cmd/natsaga-bench/internal/bench"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/messages"
)

// stopWait is how long a child gets to exit after SIGTERM.
const stopWait = 15 * time.Second

// system is one system under test: a server, a coordinator and agents, each
// a child process, and the benchmark's own connection.
type system struct {
	mode   string
	log    *slog.Logger
	dir    string
	out    io.Writer
	server *procs.Proc
	coord  *procs.Proc
	agents []*procs.Proc
	nc     *nats.Conn
}

// sysSpec is what startSystem starts.
type sysSpec struct {
	mode   string
	agents int
	// profile is the prefix of the children's CPU profiles ("" for none).
	profile string
}

// startSystem starts the server, the coordinator and the agents of s.mode in
// a new temporary directory, and waits until the coordinator answers and
// every agent pulls. On error it stops what it started; otherwise the caller
// calls stop.
func startSystem(ctx context.Context, c *config, s sysSpec, stderr io.Writer, log *slog.Logger) (_ *system, err error) {
	dir, err := os.MkdirTemp("", "natsaga-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	sys := &system{mode: s.mode, log: log, dir: dir, out: stderr}
	defer func() {
		if err != nil {
			sys.stop()
		}
	}()
	if !c.verbose {
		f, err := os.Create(filepath.Join(dir, "processes.log"))
		if err != nil {
			return nil, fmt.Errorf("process log: %w", err)
		}
		sys.out = f
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	start := func(name, role string, args ...string) (*procs.Proc, error) {
		if s.profile != "" {
			args = append(args, "-cpuprofile", s.profile+"-"+name+".pprof")
		}
		if role != roleServer {
			args = append(args, "-nats", url)
		}
		return procs.Start(name, c.self, args, append([]string{childEnv + "=" + role}, cli.ChildEnv...), sys.out)
	}
	if sys.server, err = start("server", roleServer, "-store", filepath.Join(dir, "jetstream"), "-port", strconv.Itoa(port)); err != nil {
		return nil, err
	}
	conn := cli.Conn{URL: url, Wait: childConnectWait}
	if sys.nc, err = conn.Connect(ctx, "natsaga-bench", log); err != nil {
		return nil, err
	}
	coordRole, agentRole := roleCoordinator, roleAgent
	var coordArgs []string
	if s.mode == modeBaseline {
		coordRole, agentRole = roleBaseCoord, roleBaseAgent
		coordArgs = []string{"-workers", strconv.Itoa(c.workers)}
	}
	if sys.coord, err = start("coordinator", coordRole, coordArgs...); err != nil {
		return nil, err
	}
	if _, err := sys.heap(ctx, 30*time.Second); err != nil {
		return nil, fmt.Errorf("%s coordinator not ready: %w", s.mode, err)
	}
	for i := range s.agents {
		name := "agent-" + strconv.Itoa(i+1)
		p, err := start(name, agentRole, "-name", name, "-concurrency", strconv.Itoa(c.concurrency),
			"-latency", c.latency.String())
		if err != nil {
			return nil, err
		}
		sys.agents = append(sys.agents, p)
	}
	if err := sys.waitAgents(ctx, s.agents, 30*time.Second); err != nil {
		return nil, err
	}
	return sys, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// procs returns every child with a name for the CPU figures: "server",
// "coordinator" and "agents" (all copies together).
func (s *system) procs() map[string][]*procs.Proc {
	return map[string][]*procs.Proc{"server": {s.server}, "coordinator": {s.coord}, "agents": s.agents}
}

// exited returns an error when a child has exited, nil while all run.
func (s *system) exited() error {
	for _, ps := range s.procs() {
		for _, p := range ps {
			select {
			case <-p.Done():
				return fmt.Errorf("%s exited: %v (see %s)", p.Name, p.Err(), s.logHint())
			default:
			}
		}
	}
	return nil
}

func (s *system) logHint() string {
	if f, ok := s.out.(*os.File); ok && f != os.Stderr {
		return f.Name()
	}
	return "stderr"
}

// heap asks the coordinator for its live heap, retrying until it answers
// or wait passes.
func (s *system) heap(ctx context.Context, wait time.Duration) (uint64, error) {
	deadline := time.Now().Add(wait)
	for {
		if err := s.exited(); err != nil {
			return 0, err
		}
		m, err := s.nc.Request(heapSubject, nil, 5*time.Second)
		if err == nil {
			var h heapStats
			if err := json.Unmarshal(m.Data, &h); err != nil {
				return 0, fmt.Errorf("heap answer: %w", err)
			}
			return h.HeapAlloc, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("heap: %w", err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitAgents waits until n pull requests wait on the agents' consumer: every
// copy is pulling.
func (s *system) waitAgents(ctx context.Context, n int, wait time.Duration) error {
	if n == 0 {
		return nil
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return fmt.Errorf("agents: %w", err)
	}
	stream, consumer := messages.CommandStream, messages.CommandConsumer(benchRole)
	if s.mode == modeBaseline {
		stream, consumer = baseline.CommandStream, baseline.AgentConsumer
	}
	deadline := time.Now().Add(wait)
	for {
		if err := s.exited(); err != nil {
			return err
		}
		cons, err := js.Consumer(ctx, stream, consumer)
		if err == nil {
			info, err := cons.Info(ctx)
			if err == nil && info.NumWaiting >= n {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d agents not pulling after %s", n, wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// cpu returns the CPU time each named group of children has used so far.
func (s *system) cpu() (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	for name, ps := range s.procs() {
		for _, p := range ps {
			d, err := bench.ProcessCPU(p.PID())
			if err != nil {
				return nil, err
			}
			out[name] += d
		}
	}
	return out, nil
}

// stored is how many messages each of the server's streams has stored
// since it was created (its last sequence number), the buckets' included,
// by [streamKind].
func (s *system) stored(ctx context.Context) (map[string]uint64, error) {
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, err
	}
	n := map[string]uint64{}
	streams := js.ListStreams(ctx)
	for info := range streams.Info() {
		n[streamKind(info.Config.Name)] += info.State.LastSeq
	}
	if err := streams.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	return n, nil
}

// streamKind names a stream in the benchmark's report: natsaga's by what
// they hold ("bucket", "sagas" for the saga log, "commands", "replies",
// "events", "records" for
// every role's record stream and "state" for every role's state stream),
// any other by its own name.
func streamKind(name string) string {
	switch {
	case name == messages.SagaBucketStream:
		return "bucket"
	case name == messages.SagaLogStream:
		return "sagas"
	case name == messages.CommandStream:
		return "commands"
	case name == messages.ReplyStream:
		return "replies"
	case name == messages.EventStream:
		return "events"
	case strings.HasPrefix(name, messages.StateStream("")):
		return "state"
	case strings.HasPrefix(name, messages.RecordStream("")):
		return "records"
	}
	return name
}

// summary asks the coordinator for its summary.
func (s *system) summary() (messages.Summary, error) {
	var sum messages.Summary
	m, err := s.nc.Request(messages.SummarySubject, nil, 10*time.Second)
	if err != nil {
		return sum, fmt.Errorf("summary: %w", err)
	}
	if err := json.Unmarshal(m.Data, &sum); err != nil {
		return sum, fmt.Errorf("summary: %w", err)
	}
	return sum, nil
}

// stop stops the agents, then the coordinator, then the server, and removes
// the temporary directory.
func (s *system) stop() {
	if s.nc != nil {
		s.nc.Close()
	}
	stopAll := func(ps []*procs.Proc) {
		for _, p := range ps {
			if p != nil {
				if err := p.Stop(stopWait); err != nil {
					s.log.Warn("child did not stop cleanly", "child", p.Name, "err", err)
				}
			}
		}
	}
	stopAll(s.agents)
	stopAll([]*procs.Proc{s.coord})
	stopAll([]*procs.Proc{s.server})
	if f, ok := s.out.(*os.File); ok && f != os.Stderr {
		_ = f.Close()
	}
	if err := os.RemoveAll(s.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("temporary directory not removed", "dir", s.dir, "err", err)
	}
}
