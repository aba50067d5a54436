package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/procs"
)

// stopTimeout is how long a spawned process gets to drain after SIGTERM
// before it is killed.
const stopTimeout = 10 * time.Second

// system is what floodsim spawned: an embedded nats-server and the
// coordinator and agent processes.
type system struct {
	log     *slog.Logger
	ns      *server.Server
	coord   *procs.Proc
	agents  []*procs.Proc
	logFile *os.File
	// dataDir is removed by stop when temp is set.
	dataDir string
	temp    bool
}

// ledgers are the opening balances, in cents, passed to the agents'
// -ledger flag.
type ledgers struct{ budget, fund int64 }

// startSystem starts the embedded server, then the coordinator, then the
// agents, in c.dataDir (a new temporary directory when empty). The
// processes log to floodsim.log in the data directory, or to stderr with
// c.verbose. On error it stops what it started; otherwise the caller calls
// stop.
func startSystem(ctx context.Context, c *config, l ledgers, stderr *procs.Lines, log *slog.Logger) (_ *system, err error) {
	s := &system{log: log, dataDir: c.dataDir}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if s.dataDir == "" {
		if s.dataDir, err = os.MkdirTemp("", "floodsim-"); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		s.temp = true
	} else if err = os.MkdirAll(s.dataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}

	bins, err := binaries(ctx, c, log)
	if err != nil {
		return nil, err
	}

	out := stderr
	if !c.verbose {
		if s.logFile, err = os.OpenFile(s.LogPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return nil, fmt.Errorf("process log: %w", err)
		}
		out = procs.NewLines(s.logFile)
	}

	if s.ns, err = embedded.Start(embedded.Options{StoreDir: filepath.Join(s.dataDir, "jetstream")}); err != nil {
		return nil, err
	}
	// The children reach the embedded server, which has no users: drop any
	// credentials this process was given for another server.
	env := append([]string{"NATS_URL=" + s.ns.ClientURL(), "NATSAGA_LOG_FORMAT=" + c.logFormat}, cli.ChildEnv...)
	// metrics gives the next program its -metrics-addr, if any.
	var addrs []string
	if c.metricsAddr != "" {
		if addrs, err = c.metricsAddrs(); err != nil {
			return nil, err
		}
	}
	metrics := func(args []string) []string {
		if len(addrs) == 0 {
			return args
		}
		args = append(args, "-metrics-addr", addrs[0])
		addrs = addrs[1:]
		return args
	}
	if s.coord, err = procs.Start("coordinator", bins["coordinator"], metrics(nil), env, out.Writer()); err != nil {
		return nil, err
	}
	for _, role := range roles() {
		var args []string
		switch role {
		case "government":
			args = []string{"-ledger", strconv.FormatInt(l.budget, 10)}
		case "insurer":
			args = []string{"-ledger", strconv.FormatInt(l.fund, 10)}
		}
		for i := range c.copies[role] {
			if err := ctx.Err(); err != nil {
				return nil, err // stopped while starting: what started stops
			}
			name := fmt.Sprintf("%s-%d", role, i+1)
			p, err := procs.Start(name, bins[role+"-agent"], metrics(append([]string{"-name", name}, args...)), env, out.Writer())
			if err != nil {
				return nil, err
			}
			s.agents = append(s.agents, p)
		}
	}
	log.Info("system started", "nats", s.ns.ClientURL(), "data", s.dataDir, "agents", len(s.agents), "coordinator_pid", s.coord.PID())
	return s, nil
}

// binaries returns the path of each program by name: from c.binDir when
// set; else beside floodsim's own executable (after `go install
// ./cmd/...`); else built into c.buildDir from the natsaga checkout the
// working directory is in; else on PATH.
func binaries(ctx context.Context, c *config, log *slog.Logger) (map[string]string, error) {
	if c.binDir != "" {
		bins := map[string]string{}
		for _, name := range procs.Programs {
			path := filepath.Join(c.binDir, name)
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("-bin %s: %w", c.binDir, err)
			}
			bins[name] = path
		}
		return bins, nil
	}
	if bins, err := procs.Beside(procs.Programs...); err == nil {
		log.Info("programs found beside floodsim", "dir", filepath.Dir(bins["coordinator"]))
		return bins, nil
	}
	if _, err := procs.ModuleRoot(); err == nil {
		start := time.Now()
		bins, err := procs.Build(ctx, c.buildDir, false, procs.Programs...)
		if err != nil {
			return nil, fmt.Errorf("build the programs: %w", err)
		}
		log.Info("programs built", "dir", c.buildDir, "took", time.Since(start).Round(time.Millisecond))
		return bins, nil
	}
	bins, err := procs.OnPath(procs.Programs...)
	if err != nil {
		return nil, fmt.Errorf("floodsim runs the programs %v: install them beside it or on PATH "+
			"(go install github.com/natsaga/natsaga/cmd/...@latest), run from the natsaga repository, or pass -bin: %w",
			procs.Programs, err)
	}
	log.Info("programs found on PATH", "coordinator", bins["coordinator"])
	return bins, nil
}

// URL is the embedded server's client URL.
func (s *system) URL() string { return s.ns.ClientURL() }

// LogPath is the file the processes log to unless -v is set.
func (s *system) LogPath() string { return filepath.Join(s.dataDir, "floodsim.log") }

// exited returns an error naming the first spawned process that has
// exited, nil while all run.
func (s *system) exited() error {
	for _, p := range append([]*procs.Proc{s.coord}, s.agents...) {
		if p == nil {
			continue
		}
		select {
		case <-p.Done():
			err := fmt.Errorf("%s (pid %d) exited: %v", p.Name, p.PID(), p.Err())
			if line := p.LastLine(); line != "" {
				// Why, most often; the log it is in may be removed with
				// the data directory.
				err = fmt.Errorf("%w; its last line: %s", err, line)
			}
			return err
		default:
		}
	}
	return nil
}

// stop sends SIGTERM to the agents, then to the coordinator, waiting for
// each to drain (killing it after stopTimeout), shuts the server down and
// removes a temporary data directory. It is safe on a partly started
// system.
func (s *system) stop() {
	var wg sync.WaitGroup
	for _, p := range s.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.stopProc(p)
		}()
	}
	wg.Wait()
	if s.coord != nil {
		s.stopProc(s.coord)
	}
	if s.ns != nil {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	}
	if s.logFile != nil {
		_ = s.logFile.Close()
	}
	if s.temp {
		if err := os.RemoveAll(s.dataDir); err != nil {
			s.log.Warn("temporary data directory not removed", "dir", s.dataDir, "err", err)
		}
	}
}

func (s *system) stopProc(p *procs.Proc) {
	if err := p.Stop(stopTimeout); err != nil {
		s.log.Warn("process did not stop cleanly", "child", p.Name, "err", err)
	}
}
