package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/procs"
)

// system is natsaga run as separate processes, as both chaos tests run it:
// a nats-server, the coordinator and copies of each agent, every one
// restarted when it exits, killed or crashed, as under a restart policy.
type system struct {
	url         string
	env         []string // NATS_URL, for the system's processes and their clients
	server      *procs.Proc
	coordinator *procs.Proc
	agents      map[string][]*procs.Proc
	all         []*procs.Proc
	// restarts counts the processes brought back.
	restarts atomic.Int64

	t     *testing.T
	label string
	log   *os.File
	// stopping is set when the processes' exits are no longer restarted.
	stopping       atomic.Bool
	stopSupervisor context.CancelFunc
	supervisor     sync.WaitGroup
	stopped        sync.Once
}

// systemConfig is what differs between the systems the chaos tests run.
type systemConfig struct {
	bins map[string]string // the programs, built by procs.Build
	dir  string            // nats-server stores its JetStream data in dir/js
	// logPath receives every process's output.
	logPath string
	// label names the run in the logs of a test that runs more than one.
	label string
	// copies of each agent run; ledger holds the opening amounts of the
	// agents that keep one.
	copies int
	ledger map[string]int64
}

// startSystem starts a system as cfg says and supervises it until ctx ends
// or the test ends. Stop it with stop; the test's cleanup stops it too.
func startSystem(t *testing.T, ctx context.Context, cfg systemConfig) *system {
	t.Helper()
	logf, err := os.Create(cfg.logPath)
	require.NoError(t, err)
	s := &system{t: t, label: cfg.label, log: logf, agents: map[string][]*procs.Proc{}}
	supervising, stop := context.WithCancel(ctx)
	s.stopSupervisor = stop
	t.Cleanup(s.stop)

	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	s.url = "nats://" + addr
	s.env = []string{"NATS_URL=" + s.url}
	start := func(name, bin string, args, env []string) *procs.Proc {
		p, err := procs.Start(name, bin, args, env, logf)
		require.NoError(t, err)
		s.all = append(s.all, p)
		return p
	}
	s.server = start("nats-server", cfg.bins[procs.NATSServer], []string{"-js", "-sd", filepath.Join(cfg.dir, "js"), "-a", host, "-p", port}, nil)
	s.coordinator = start("coordinator", cfg.bins["coordinator"], []string{"-ack-wait", "2s", "-log-level", "warn"}, s.env)
	for _, role := range roles {
		for i := range cfg.copies {
			args := []string{"-name", fmt.Sprintf("%s-%d", role, i), "-ack-wait", "3s", "-log-level", "warn"}
			if l, ok := cfg.ledger[role]; ok {
				args = append(args, "-ledger", strconv.FormatInt(l, 10))
			}
			s.agents[role] = append(s.agents[role], start(role+"-agent", cfg.bins[role+"-agent"], args, s.env))
		}
	}
	for _, p := range s.all {
		s.supervisor.Go(func() { s.supervise(supervising, p) })
	}
	return s
}

// supervise restarts p each time it exits, until ctx ends or the system
// stops.
func (s *system) supervise(ctx context.Context, p *procs.Proc) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.Done():
		}
		if s.stopping.Load() {
			return
		}
		if err := p.Restart(); err != nil {
			s.t.Errorf("restart %s: %v", p.Name, err)
			return
		}
		s.restarts.Add(1)
	}
}

// stop stops the system, once however often it is called: it ends the
// supervisor, stops every process, logs the tail of their output when the
// test has failed, and closes that output.
func (s *system) stop() {
	s.stopped.Do(func() {
		s.stopping.Store(true)
		s.stopSupervisor()
		s.supervisor.Wait()
		for _, p := range s.all {
			_ = p.Stop(5 * time.Second)
		}
		if s.t.Failed() {
			data, _ := os.ReadFile(s.log.Name())
			s.t.Logf("process logs%s (tail):\n%s", s.of(), tail(data, 20000))
		}
		_ = s.log.Close()
	})
}

// of names the run in a log line: "" or " of the <label> run".
func (s *system) of() string {
	if s.label == "" {
		return ""
	}
	return " of the " + s.label + " run"
}

// killSchedule is a seeded order of SIGKILLs.
type killSchedule struct {
	// victims are killed in order: "coordinator", "nats-server", or an
	// agent role, one of whose copies rng draws.
	victims []string
	rng     *rand.Rand
	// delay returns the wait before the next kill.
	delay func() time.Duration
	// until, when it closes, ends the schedule early (nil: never).
	until <-chan struct{}
	// beforeAgent, when set, is called before an agent is killed.
	beforeAgent func()
	// began is when the run began, for the log.
	began time.Time
}

// kill carries out k and returns the kills by victim. It fails the test
// when ctx ends first.
func (s *system) kill(ctx context.Context, k killSchedule) map[string]int {
	t := s.t
	t.Helper()
	kills := map[string]int{}
	for _, v := range k.victims {
		select {
		case <-k.until:
			return kills
		case <-ctx.Done():
			t.Fatalf("the kill schedule%s did not finish in time", s.of())
		case <-time.After(k.delay()):
		}
		var p *procs.Proc
		switch v {
		case "coordinator":
			p = s.coordinator
		case "nats-server":
			p = s.server
		default:
			p = s.agents[v][k.rng.IntN(len(s.agents[v]))]
			if k.beforeAgent != nil {
				k.beforeAgent()
			}
		}
		kills[v]++
		t.Logf("SIGKILL %s (pid %d)%s at %.1fs", p.Name, p.PID(), s.of(), time.Since(k.began).Seconds())
		p.Kill()
	}
	return kills
}
