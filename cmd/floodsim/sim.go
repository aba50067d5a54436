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
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

const (
	// startConcurrency bounds the start requests in flight at once.
	startConcurrency = 32
	// pollInterval spaces the polls of the coordinator while a tick
	// settles.
	pollInterval = 5 * time.Millisecond
	// statsWait bounds the wait for agent statistics once the agents are
	// known to run.
	statsWait = 2 * time.Second
)

// Errors run returns when the simulation ran but its result is wrong.
var (
	errInvariants = errors.New("invariants violated")
	errOutcomes   = errors.New("outcomes missing")
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
	log, err := cli.NewLogger(stderr, level, c.logFormat)
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

	cl := &client{nc: nc, log: log}
	if c.tracerProvider != nil {
		cl.tracer = c.tracerProvider.Tracer("github.com/natsaga/natsaga/cmd/floodsim")
	}
	s := &sim{cfg: &c, sc: sc, cl: cl, sys: sys, out: stdout, log: log,
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
	if c.jsonPath != "" {
		if err := rep.writeJSON(c.jsonPath); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "JSON report written to %s\n", c.jsonPath)
	}
	if c.htmlPath != "" {
		if err := rep.writeHTML(c.htmlPath); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "HTML report written to %s\n", c.htmlPath)
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

	// rows has a row per tick, for the reports.
	rows      []tickRow
	unsettled []int
	// stalled counts the unsettled ticks in a row; after
	// cfg.maxUnsettled the run stops ticking, and aborted says why.
	stalled   int
	aborted   string
	extra     int
	simulated time.Duration
}

// waitReady waits until the coordinator answers and want agents answer
// micro's STATS request to messages.AgentService, bounded by -agent-wait.
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
			return fmt.Errorf("only %d of %d agents (micro service %s) answered within %s (-expect-agents, -agent-wait)",
				answered, s.want, messages.AgentService, s.cfg.agentWait)
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
	for t := 1; t <= s.sc.Options.Ticks && s.aborted == ""; t++ {
		tick := base.Tick + int64(t)
		tickStart := time.Now()
		if _, err := s.cl.tick(ctx, tick); err != nil {
			return nil, err
		}
		n := s.startAll(ctx, s.sc.NeedsAt(t))
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
		if _, err := s.cl.tick(ctx, base.Tick+int64(t)); err != nil {
			return nil, err
		}
		if err := s.settleAndReport(ctx, t, base.Tick+int64(t), 0, base, tickStart); err != nil {
			return nil, err
		}
	}
	if s.aborted != "" {
		fmt.Fprintf(s.out, "floodsim: stopped ticking: %s\n", s.aborted)
	}
	s.simulated = time.Since(began)
	return s.collect(ctx, flood.LedgerChange{Before: govBefore}, flood.LedgerChange{Before: insBefore}, contractorBefore)
}

// startAll starts the sagas of needs, at most startConcurrency at once, and
// returns how many the coordinator accepted.
func (s *sim) startAll(ctx context.Context, needs []flood.Need) int {
	sem := make(chan struct{}, startConcurrency)
	var wg sync.WaitGroup
	n := 0
	for _, need := range needs {
		id := uuid.NewString()
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
			err := s.cl.start(ctx, need.Saga, id, need.Context())
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
// tick's wall-clock time since began.
func (s *sim) settleAndReport(ctx context.Context, t int, tick int64, started int, base messages.Summary, began time.Time) error {
	sum, settled, err := s.settle(ctx, tick)
	if err != nil {
		return err
	}
	if settled {
		s.stalled = 0
	} else {
		s.unsettled = append(s.unsettled, t)
		if s.stalled++; s.stalled >= s.cfg.maxUnsettled {
			s.aborted = fmt.Sprintf("%d ticks in a row did not settle within %s (-max-unsettled, -tick-wait): the system is not answering", s.stalled, s.cfg.tickWait)
		}
	}
	gov, err := s.ledger(ctx, flood.Government)
	if err != nil {
		return err
	}
	ins, err := s.ledger(ctx, flood.Insurer)
	if err != nil {
		return err
	}
	s.rows = append(s.rows, tickRow{T: t, Tick: tick, Started: started, Active: sum.Active,
		Completed: sum.Completed - base.Completed, RolledBack: sum.RolledBack - base.RolledBack,
		TimedOut: sum.TimedOut - base.TimedOut, Failed: sum.Failed - base.Failed,
		Budget: gov.Balance, Fund: ins.Balance, Settled: settled, WallMS: time.Since(began).Milliseconds(),
		Extra: t > s.sc.Options.Ticks})
	label := fmt.Sprintf("%3d/%d", t, s.sc.Options.Ticks)
	if t > s.sc.Options.Ticks {
		label = fmt.Sprintf("%3d extra", t)
	}
	note := ""
	if !settled {
		note = fmt.Sprintf("  (not settled after %s)", s.cfg.tickWait)
	}
	fmt.Fprintf(s.out, "tick %-9s started %4d  active %4d  completed %5d  rolled_back %5d  timed_out %4d  failed %3d  budget left %14s  %5.2fs%s\n",
		label, started, sum.Active, sum.Completed-base.Completed, sum.RolledBack-base.RolledBack,
		sum.TimedOut-base.TimedOut, sum.Failed-base.Failed, money(gov.Balance), time.Since(began).Seconds(), note)
	return nil
}

// settle polls the coordinator until tick has settled: no command is
// waiting for its first answer, no retry is pending, and no slow step
// whose simulation time is up is still working. It gives up after
// -tick-wait, reporting false.
func (s *sim) settle(ctx context.Context, tick int64) (messages.Summary, bool, error) {
	deadline := time.Now().Add(s.cfg.tickWait)
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	logged := false
	for {
		sum, err := s.cl.summary(ctx, 5)
		if err != nil {
			return sum, false, err
		}
		if sum.Awaiting == 0 {
			busy, err := s.busy(ctx, tick)
			if err != nil {
				return sum, false, err
			}
			if busy == "" {
				return sum, true, nil
			}
			if !logged {
				s.log.Debug("waiting for a saga that answered to move on", "tick", tick, "saga_id", busy)
				logged = true
			}
		}
		if time.Now().After(deadline) {
			s.log.Warn("tick did not settle; going on", "tick", tick, "awaiting", sum.Awaiting, "active", sum.Active)
			return sum, false, nil
		}
		select {
		case <-ctx.Done():
			return sum, false, ctx.Err()
		case <-poll.C:
		}
	}
}

// busy returns the id of an active saga that is not settled at tick
// although it has answered, "" when there is none: one waiting to retry a
// command, or an elevation whose contractor answered "working" and whose
// contractor_ticks have passed, so that its result is on the way.
func (s *sim) busy(ctx context.Context, tick int64) (string, error) {
	xs, err := s.cl.active(ctx)
	if err != nil {
		return "", err
	}
	contractorStep := slices.IndexFunc(flood.ElevationSaga().Steps, func(st saga.Step) bool { return st.Role == flood.Contractor })
	for _, x := range xs {
		if !x.RetryAt.IsZero() {
			return x.ID, nil
		}
		if x.Saga == flood.Elevation && x.Current == contractorStep && x.Action == messages.Execute {
			d, err := x.Context.Int64(flood.KeyContractorTicks)
			if err == nil && x.DispatchedTick+d <= tick {
				return x.ID, nil
			}
		}
	}
	return "", nil
}

func (s *sim) ledger(ctx context.Context, role string) (flood.Ledger, error) {
	var l flood.Ledger
	if _, err := s.stores[role].Get(ctx, flood.LedgerKey, &l); err != nil {
		return l, fmt.Errorf("%s ledger: %w", role, err)
	}
	return l, nil
}

// houses reads role's record of every household of the scenario.
func (s *sim) houses(ctx context.Context, role string) (flood.Houses, error) {
	hs := flood.Houses{}
	for _, h := range s.sc.Homes {
		var house flood.House
		seq, err := s.stores[role].Get(ctx, flood.HouseKey(h.ID), &house)
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
