package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

const (
	// startConcurrency bounds the start requests in flight at once.
	startConcurrency = 32
	// pollInterval spaces the polls of the coordinator while a tick
	// settles.
	pollInterval = 5 * time.Millisecond
	// retickInterval spaces the repeats of the current tick while a tick
	// settles: ticks are idempotent, and an agent restarted meanwhile
	// learns the time from them.
	retickInterval = time.Second
	// statsWait bounds the wait for agent statistics once the agents are
	// known to run.
	statsWait = 2 * time.Second
)

// Errors run returns when the simulation ran but its result is wrong.
var (
	errInvariants = errors.New("invariants violated")
	errOutcomes   = errors.New("outcomes missing")
	// errNotReproducible: a tick did not become quiet within -tick-wait,
	// so the run stopped; going on would make its outcome depend on
	// timing.
	errNotReproducible = errors.New("the run can no longer be reproduced")
)

// run runs the simulation c describes, printing progress and the report to
// stdout and logs to stderr. It returns nil when the invariants hold (and,
// with c.requireAll, every outcome was seen), an error wrapping
// errInvariants or errOutcomes when not, and any other error that stopped
// the run, such as the end of ctx. Everything it started is stopped, and a
// temporary data directory removed, before it returns.
func run(ctx context.Context, c config, stdout, stderr io.Writer) error {
	level := "warn"
	if c.verbose {
		level = "debug"
	}
	log, err := cli.Logger(stderr, level)
	if err != nil {
		return err
	}
	sc, err := flood.NewScenario(c.scenario)
	if err != nil {
		return err
	}
	if c.plan {
		return printPlan(stdout, sc)
	}
	began := time.Now()
	want := c.expectAgents
	conn := c.conn
	var sys *system
	l := ledgers{budget: sc.GovernmentBudget, fund: sc.InsurerFund}
	if c.spawn {
		l = ledgers{budget: cmp.Or(c.budget, sc.GovernmentBudget), fund: cmp.Or(c.fund, sc.InsurerFund)}
		fmt.Fprintf(stdout, "floodsim: building and starting the coordinator and %d agents...\n", c.spawned())
		if sys, err = startSystem(ctx, &c, l, stderr, log); err != nil {
			return err
		}
		defer sys.stop()
		conn.URL, conn.User, conn.Password = sys.URL(), "", ""
		if want == 0 {
			want = c.spawned()
		}
		where := "stderr"
		if !c.verbose {
			where = sys.LogPath()
		}
		fmt.Fprintf(stdout, "floodsim: embedded nats-server at %s, data in %s, process logs in %s\n", sys.URL(), sys.dataDir, where)
	}
	nc, err := conn.Connect(ctx, "floodsim", log)
	if err != nil {
		return err
	}
	defer cli.Drain(nc, 5*time.Second)

	s := &sim{cfg: &c, sc: sc, cl: &client{nc: nc, log: log}, sys: sys, out: stdout, log: log,
		started: map[string]string{}, uncertain: map[string]string{}, want: want, opening: l}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	setup := time.Since(began)
	rep, err := s.simulate(ctx)
	if err != nil {
		return err
	}
	rep.Durations = durations{SetupMS: setup.Milliseconds(), SimulationMS: s.simulated.Milliseconds(),
		TotalMS: time.Since(began).Milliseconds()}
	rep.print(stdout)
	if c.outcomesPath != "" {
		if err := os.WriteFile(c.outcomesPath, s.outcomeLog, 0o644); err != nil {
			return fmt.Errorf("outcome log: %w", err)
		}
		fmt.Fprintf(stdout, "outcome log written to %s\n", c.outcomesPath)
	}
	if c.jsonPath != "" {
		if err := rep.writeJSON(c.jsonPath); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "JSON report written to %s\n", c.jsonPath)
	}
	if s.aborted != "" {
		return fmt.Errorf("%s: %w", s.aborted, errNotReproducible)
	}
	if !rep.Invariants.OK {
		return fmt.Errorf("%d violations: %w", len(rep.Invariants.Violations), errInvariants)
	}
	if c.requireAll && len(rep.MissingOutcomes) > 0 {
		return fmt.Errorf("%w: %v (-require-all-outcomes=false to accept)", errOutcomes, rep.MissingOutcomes)
	}
	return nil
}

func printPlan(w io.Writer, sc *flood.Scenario) error {
	plan := struct {
		Options          flood.ScenarioOptions `json:"options"`
		Floods           int                   `json:"floods"`
		Sagas            map[string]int        `json:"sagas"`
		Expected         flood.Expected        `json:"expected"`
		GovernmentBudget int64                 `json:"government_budget"`
		InsurerFund      int64                 `json:"insurer_fund"`
	}{sc.Options, len(sc.Floods), sc.Count(), sc.Expected, sc.GovernmentBudget, sc.InsurerFund}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(plan)
}

// sim is one run of the simulation.
type sim struct {
	cfg *config
	sc  *flood.Scenario
	cl  *client
	sys *system // nil without -spawn
	out io.Writer
	log *slog.Logger
	// want is how many agents must answer.
	want int
	// opening are the ledgers the run is sized for.
	opening ledgers

	stores map[string]*participant.Store

	mu sync.Mutex
	// started maps the id of every saga the coordinator accepted to its
	// type; uncertain holds those whose start was never confirmed.
	started, uncertain map[string]string
	startErrs          []string

	// rank is the rank of the last saga started: the driver's start order.
	rank int64
	// aborted says why the run stopped ticking, if a tick did not become
	// quiet.
	aborted   string
	extra     int
	simulated time.Duration
	// tickTimes are the wall-clock times of the ticks run, in order.
	tickTimes []time.Duration
	// outcomeLog is the run's outcome log, once collected.
	outcomeLog []byte
}

// waitReady waits until the coordinator answers and want agents answer on
// messages.AgentStatsSubject, bounded by -agent-wait.
func (s *sim) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.agentWait)
	defer cancel()
	if _, err := s.cl.summary(ctx, math.MaxInt); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("the coordinator did not answer on %s within %s (-agent-wait): %w",
				messages.SummarySubject, s.cfg.agentWait, err)
		}
		return fmt.Errorf("waiting for the coordinator: %w", err)
	}
	for answered := 0; answered < s.want; {
		stats, err := s.cl.agentStats(ctx, s.want, 500*time.Millisecond)
		answered = max(answered, len(stats))
		if ctx.Err() != nil {
			return fmt.Errorf("only %d of %d agents answered on %s within %s (-expect-agents, -agent-wait)",
				answered, s.want, messages.AgentStatsSubject, s.cfg.agentWait)
		}
		if err != nil {
			return fmt.Errorf("waiting for %d agents: %w", s.want, err)
		}
		if s.sys != nil {
			if err := s.sys.exited(); err != nil {
				return fmt.Errorf("waiting for the agents: %w", err)
			}
		}
	}
	s.log.Info("agents ready", "agents", s.want)
	s.stores = map[string]*participant.Store{}
	for _, role := range roles() {
		st, err := participant.OpenStore(ctx, s.cl.nc, role, false, 1)
		if err != nil {
			return fmt.Errorf("waiting for the %s store: %w", role, err)
		}
		s.stores[role] = st
	}
	return nil
}

// simulate runs the ticks and returns the report.
func (s *sim) simulate(ctx context.Context) (*report, error) {
	began := time.Now()
	base, err := s.cl.summary(ctx, 5)
	if err != nil {
		return nil, err
	}
	govBefore, err := s.ledger(ctx, flood.Government)
	if err != nil {
		return nil, err
	}
	insBefore, err := s.ledger(ctx, flood.Insurer)
	if err != nil {
		return nil, err
	}
	contractorBefore, err := s.houses(ctx, flood.Contractor)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(s.out, "floodsim: seed %d, %d households, %d ticks, %d sagas planned; government budget %s, insurer fund %s\n",
		s.sc.Options.Seed, s.sc.Options.Households, s.sc.Options.Ticks, total(s.sc.Count()), money(govBefore.Balance), money(insBefore.Balance))
	if govBefore.Balance != s.opening.budget || insBefore.Balance != s.opening.fund {
		fmt.Fprintf(s.out, "floodsim: note: the run is sized for a government budget of %d and an insurer fund of %d cents "+
			"(the agents' -ledger; a reused -data keeps what earlier runs left); with other ledgers the outcomes differ\n",
			s.opening.budget, s.opening.fund)
	}

	// The clock goes on from the coordinator's tick, which a system that
	// ran before has moved.
	// The sagas of a tick are started before it, scheduled for it: the
	// tick releases them together, in rank order.
	for t := 1; t <= s.sc.Options.Ticks && s.aborted == ""; t++ {
		tick := base.Tick + int64(t)
		tickStart := time.Now()
		n := s.startAll(ctx, s.sc.NeedsAt(t), base.Tick, tick)
		if _, err := s.cl.tick(ctx, tick, s.patience()); err != nil {
			return nil, err
		}
		if err := s.settleAndReport(ctx, t, tick, n, base, tickStart); err != nil {
			return nil, err
		}
	}
	// Let the sagas still running end: they time out if nothing else.
	for s.extra < s.cfg.maxExtraTicks && s.aborted == "" {
		sum, err := s.cl.summary(ctx, 5)
		if err != nil {
			return nil, err
		}
		if sum.Active == 0 {
			break
		}
		s.extra++
		t := s.sc.Options.Ticks + s.extra
		tickStart := time.Now()
		if _, err := s.cl.tick(ctx, base.Tick+int64(t), s.patience()); err != nil {
			return nil, err
		}
		if err := s.settleAndReport(ctx, t, base.Tick+int64(t), 0, base, tickStart); err != nil {
			return nil, err
		}
	}
	if s.aborted != "" {
		fmt.Fprintf(s.out, "floodsim: stopped ticking: %s; %s\n", s.aborted, errNotReproducible)
	}
	s.simulated = time.Since(began)
	return s.collect(ctx, flood.LedgerChange{Before: govBefore}, flood.LedgerChange{Before: insBefore}, contractorBefore)
}

// startAll schedules the sagas of needs for tick, at most startConcurrency
// requests at once, and returns how many the coordinator accepted. Each
// saga's rank is its place in the driver's start order, and its id is
// derived from the seed, the clock the run began at (base) and the rank,
// so that two runs can be compared saga by saga.
func (s *sim) startAll(ctx context.Context, needs []flood.Need, base, tick int64) int {
	sem := make(chan struct{}, startConcurrency)
	var wg sync.WaitGroup
	n := 0
	for _, need := range needs {
		s.rank++
		rank := s.rank
		id := sagaID(s.sc.Options.Seed, base, rank)
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return n
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := s.cl.start(ctx, need.Saga, id, rank, tick, need.Context())
			s.mu.Lock()
			defer s.mu.Unlock()
			if err != nil {
				// The coordinator may have started it all the same; the
				// final status tells.
				s.uncertain[id] = need.Saga
				s.startErrs = append(s.startErrs, fmt.Sprintf("tick %d: %s saga for %s: %v", need.Tick, need.Saga, need.Household, err))
				s.log.Error("saga not started", "saga", need.Saga, "saga_id", id, "tick", need.Tick, "err", err)
				return
			}
			s.started[id] = need.Saga
			n++
		}()
	}
	wg.Wait()
	return n
}

// settleAndReport waits for tick to settle and prints its progress line:
// the sagas started at the tick, the active ones, the counts of the run so
// far (the coordinator's, less those at base), the budget left and the
// tick's wall-clock time since began. A tick that does not settle stops
// the run (s.aborted says why).
func (s *sim) settleAndReport(ctx context.Context, t int, tick int64, started int, base messages.Summary, began time.Time) error {
	sum, err := s.settle(ctx, tick)
	if err != nil {
		return err
	}
	gov, err := s.ledger(ctx, flood.Government)
	if err != nil {
		return err
	}
	label := fmt.Sprintf("%3d/%d", t, s.sc.Options.Ticks)
	if t > s.sc.Options.Ticks {
		label = fmt.Sprintf("%3d extra", t)
	}
	note := ""
	if s.aborted != "" {
		note = fmt.Sprintf("  (not quiet: %d due)", sum.Due)
	}
	fmt.Fprintf(s.out, "tick %-9s started %4d  active %4d  completed %5d  rolled_back %5d  timed_out %4d  failed %3d  budget left %14s  %5.2fs%s\n",
		label, started, sum.Active, sum.Completed-base.Completed, sum.RolledBack-base.RolledBack,
		sum.TimedOut-base.TimedOut, sum.Failed-base.Failed, money(gov.Balance), time.Since(began).Seconds(), note)
	s.tickTimes = append(s.tickTimes, time.Since(began))
	return nil
}

// settle polls the coordinator's summary until tick is quiet: no command
// due at or before it lacks its final answer (Summary.Due is 0). Meanwhile
// it repeats the tick every retickInterval, so that an agent restarted
// since learns the time. When the due count has not changed for
// -tick-wait, an agent broke its word (it is gone, or late): settle sets
// s.aborted and returns, since the run can no longer be reproduced.
func (s *sim) settle(ctx context.Context, tick int64) (messages.Summary, error) {
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	last, changed, reticked := -1, time.Now(), time.Now()
	for {
		sum, err := s.cl.summary(ctx, s.patience())
		if err != nil {
			return sum, err
		}
		if sum.Due == 0 {
			return sum, nil
		}
		now := time.Now()
		if sum.Due != last {
			last, changed = sum.Due, now
		}
		if now.Sub(changed) > s.cfg.tickWait {
			s.aborted = fmt.Sprintf("tick %d: %d commands due had no answer for %s (-tick-wait)", tick, sum.Due, s.cfg.tickWait)
			s.log.Error("tick not quiet; stopping", "tick", tick, "due", sum.Due, "active", sum.Active)
			return sum, nil
		}
		if now.Sub(reticked) >= retickInterval {
			if _, err := s.cl.tick(ctx, tick, s.patience()); err != nil {
				return sum, err
			}
			reticked = now
		}
		select {
		case <-ctx.Done():
			return sum, ctx.Err()
		case <-poll.C:
		}
	}
}

// patience is how many times a tick or a summary is asked before the run
// gives up: a tick that starts tens of thousands of sagas keeps the
// coordinator busy for as long as it takes to store them, up to -tick-wait.
func (s *sim) patience() int {
	return max(5, int(s.cfg.tickWait/requestTimeout)+1)
}

// sagaID is the id of the saga of rank in a run of seed whose clock began
// at base: a UUID (version 5) derived from the three.
func sagaID(seed, base, rank int64) string {
	return uuid.NewSHA1(floodsimIDs, fmt.Appendf(nil, "seed=%d/base=%d/rank=%d", seed, base, rank)).String()
}

// floodsimIDs is the namespace of the saga ids floodsim derives.
var floodsimIDs = uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/natsaga/natsaga/cmd/floodsim"))

// read reads key of role's state into v and returns its sequence (0: the
// key does not exist). A read that fails is tried again for up to
// restartPatience, since the server may be restarting.
func (s *sim) read(ctx context.Context, role, key string, v any) (uint64, error) {
	patience := time.Now().Add(restartPatience)
	for {
		seq, err := s.stores[role].Get(ctx, key, v)
		if err == nil {
			return seq, nil
		}
		if ctx.Err() != nil || time.Now().After(patience) {
			return 0, err
		}
		s.log.Warn("state not read; trying again", "role", role, "key", key, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// ledger reads role's ledger.
func (s *sim) ledger(ctx context.Context, role string) (flood.Ledger, error) {
	var l flood.Ledger
	if _, err := s.read(ctx, role, flood.LedgerKey, &l); err != nil {
		return l, fmt.Errorf("%s ledger: %w", role, err)
	}
	return l, nil
}

// houses reads role's record of every household of the scenario.
func (s *sim) houses(ctx context.Context, role string) (flood.Houses, error) {
	hs := flood.Houses{}
	for _, h := range s.sc.Homes {
		var house flood.House
		seq, err := s.read(ctx, role, flood.HouseKey(h.ID), &house)
		if err != nil {
			return nil, fmt.Errorf("%s record of %s: %w", role, h.ID, err)
		}
		if seq != 0 {
			hs[h.ID] = house
		}
	}
	return hs, nil
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
