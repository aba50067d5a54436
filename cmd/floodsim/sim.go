package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

const (
	// startConcurrency bounds the batches of starts in flight at once.
	startConcurrency = 4
	// pollInterval spaces the polls of the coordinator while a tick
	// settles.
	pollInterval = 5 * time.Millisecond
	// queryWarnInterval spaces the warnings about a role whose state
	// query is not answered, asked again every queryRetry meanwhile.
	queryWarnInterval = 5 * time.Second
	queryRetry        = 250 * time.Millisecond
	// retickInterval spaces the repeats of the current tick while a tick
	// settles: ticks are idempotent, and an agent restarted meanwhile
	// learns the time from them.
	retickInterval = time.Second
	// statsWait bounds the wait for agent statistics once the agents are
	// known to run.
	statsWait = 2 * time.Second
	// statsGrace is how long the statistics are still gathered once the
	// agents the run waited for have answered: an agent that joined
	// during the run answers the same request as they do, so it comes
	// within a few milliseconds of them.
	statsGrace = 200 * time.Millisecond
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
	// Its log and, with -v, the processes' logs share stderr a line at a
	// time.
	lines := procs.NewLines(stderr)
	log, err := cli.NewLogger(lines.Writer(), level, c.logFormat)
	if err != nil {
		return err
	}
	log = log.With("process", "floodsim", "pid", os.Getpid())
	sc, err := flood.NewScenario(c.scenario)
	if err != nil {
		return err
	}
	if c.plan {
		return printPlan(stdout, sc)
	}
	// Before anything is started: a report that cannot be written fails
	// now, not after a run that may not be repeatable.
	outs, err := openOutputs(&c)
	if err != nil {
		return err
	}
	defer outs.close()
	began := time.Now()
	want := c.expectAgents
	conn := c.conn
	var sys *system
	l := ledgers{budget: sc.GovernmentBudget, fund: sc.InsurerFund}
	if c.spawn {
		l = ledgers{budget: cmp.Or(c.budget, sc.GovernmentBudget), fund: cmp.Or(c.fund, sc.InsurerFund)}
		fmt.Fprintf(stdout, "floodsim: starting the coordinator and %d agents (built first, unless given with -bin or found beside floodsim)...\n", c.spawned())
		if sys, err = startSystem(ctx, &c, l, lines, log); err != nil {
			return err
		}
		defer sys.stop()
		conn = conn.Embedded(sys.URL())
		if want == 0 {
			want = c.spawned()
		}
		where := "stderr"
		if !c.verbose {
			where = sys.LogPath()
		}
		kept := ""
		if sys.temp {
			kept = " (removed at exit; -data DIR keeps them)"
		}
		fmt.Fprintf(stdout, "floodsim: embedded nats-server at %s, data in %s, process logs in %s%s\n", sys.URL(), sys.dataDir, where, kept)
	}
	nc, err := conn.Connect(ctx, "floodsim", log)
	if err != nil {
		return err
	}
	defer cli.Drain(nc, 5*time.Second)

	opts := client.Options{RequestTimeout: requestTimeout, RestartPatience: restartPatience, Logger: log}
	if c.tracerProvider != nil {
		opts.Tracer = c.tracerProvider.Tracer("github.com/natsaga/natsaga/cmd/floodsim")
	}
	cl, err := client.New(nc, opts)
	if err != nil {
		return err
	}
	s := &sim{cfg: &c, sc: sc, cl: cl, sys: sys, out: stdout, log: log,
		started: map[string]string{}, uncertain: map[string]string{}, want: want, opening: l}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	if c.metricsAddr != "" {
		s.printMetrics(ctx)
	}
	setup := time.Since(began)
	rep, err := s.simulate(ctx)
	if err != nil && s.aborted != "" {
		// The process that held the tick may be what the report cannot
		// read: the reason the run stopped comes first. The outcome log,
		// which needs only the coordinator, is written if it was made.
		if outs.outcomes != nil && s.outcomeLog != nil {
			if werr := outs.outcomes.write(s.outcomeLog); werr == nil {
				fmt.Fprintf(stdout, "outcome log written to %s\n", c.outcomesPath)
			} else {
				err = errors.Join(err, fmt.Errorf("outcome log: %w", werr))
			}
		}
		return fmt.Errorf("%s: %w (and no report: %w)", s.aborted, errNotReproducible, err)
	}
	if err != nil {
		return err
	}
	rep.Durations = durations{SetupMS: setup.Milliseconds(), SimulationMS: s.simulated.Milliseconds(),
		TotalMS: time.Since(began).Milliseconds()}
	rep.print(stdout)
	if outs.outcomes != nil {
		if err := outs.outcomes.write(s.outcomeLog); err != nil {
			return fmt.Errorf("outcome log: %w", err)
		}
		fmt.Fprintf(stdout, "outcome log written to %s\n", c.outcomesPath)
	}
	if outs.json != nil {
		if err := rep.writeJSON(outs.json); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "JSON report written to %s\n", c.jsonPath)
	}
	if outs.html != nil {
		if err := rep.writeHTML(outs.html); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "HTML report written to %s\n", c.htmlPath)
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
	cl  *client.Client
	sys *system // nil without -spawn
	out io.Writer
	log *slog.Logger
	// want is how many agents must answer.
	want int
	// opening are the ledgers the run is sized for.
	opening ledgers

	// started maps the id of every saga the coordinator accepted to its
	// type; uncertain holds those whose start was never confirmed.
	started, uncertain map[string]string
	startErrs          []string

	// rows has a row per tick, for the reports.
	rows []tickRow
	// rank is the rank of the last saga started: the driver's start order.
	rank int64
	// aborted says why the run stopped ticking, if a tick did not become
	// quiet.
	aborted string
	// earlier counts the sagas the coordinator held in flight when the
	// run began: an earlier run's, stopped, which run in this run's
	// ticks and spend its ledgers.
	earlier   int
	extra     int
	simulated time.Duration
	// tickTimes are the wall-clock times of the ticks run, in order.
	tickTimes []time.Duration
	// outcomeLog is the run's outcome log, once collected.
	outcomeLog []byte

	// unanswered holds, per role whose state query is not answered, when
	// that began and when it was last logged.
	unansweredMu sync.Mutex
	unanswered   map[string]*unanswered
}

// unanswered is a role whose state query is not answered.
type unanswered struct{ since, logged time.Time }

// printMetrics prints the address each program that announces one serves
// its metrics and health on, as its micro service's metadata says: the
// coordinators first, then the agents by name.
func (s *sim) printMetrics(ctx context.Context) {
	infos, err := s.cl.Services(ctx, 500*time.Millisecond)
	if err != nil {
		s.log.Warn("the programs' metrics addresses are unknown", "err", err)
		return
	}
	type served struct{ name, addr string }
	var coordinators, agents []served
	for _, in := range infos {
		addr := in.Metadata["metrics"]
		switch {
		case addr == "":
		case in.Name == messages.CoordinatorService:
			coordinators = append(coordinators, served{"coordinator", addr})
		default:
			agents = append(agents, served{in.Metadata["copy"], addr})
		}
	}
	slices.SortFunc(agents, func(a, b served) int { return strings.Compare(a.name, b.name) })
	fmt.Fprintln(s.out, "floodsim: metrics and health (-metrics-addr):")
	for _, p := range append(coordinators, agents...) {
		addr := p.addr
		if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
			addr = net.JoinHostPort("127.0.0.1", port) // every interface of this host, where floodsim started it
		}
		fmt.Fprintf(s.out, "  %-16s http://%s/metrics\n", p.name, addr)
	}
}

// whileCoordinatorRuns returns ctx, ended early should the coordinator
// floodsim spawned exit (a flag it refused, a port taken), so that its
// wait does not run for all of -agent-wait.
func (s *sim) whileCoordinatorRuns(ctx context.Context) context.Context {
	if s.sys == nil || s.sys.coord == nil {
		return ctx
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.sys.coord.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx
}

// waitReady waits until the coordinator answers and want agents answer
// micro's STATS request to messages.AgentService, bounded by -agent-wait.
// A role no agent that answered has (each says its role) is warned about
// before the run starts, by name.
func (s *sim) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.agentWait)
	defer cancel()
	if _, err := s.cl.WithAttempts(math.MaxInt).Summary(s.whileCoordinatorRuns(ctx)); err != nil {
		if s.sys != nil {
			if err := s.sys.exited(); err != nil {
				return fmt.Errorf("waiting for the coordinator: %w (its log lines are in %s, kept with -data)", err, s.sys.LogPath())
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("the coordinator did not answer on %s within %s (-agent-wait): %w",
				messages.SummarySubject, s.cfg.agentWait, err)
		}
		return fmt.Errorf("waiting for the coordinator: %w", err)
	}
	// seen holds the roles of the agents that answered, any time.
	seen := map[string]bool{}
	for answered := 0; answered < s.want; {
		stats, err := s.cl.AgentStats(ctx, participant.StatsWait{Want: s.want, Max: 500 * time.Millisecond})
		answered = max(answered, len(stats))
		for _, a := range stats {
			seen[a.Role] = true
		}
		if ctx.Err() != nil {
			return fmt.Errorf("only %d of %d agents (micro service %s) answered within %s (-expect-agents, -agent-wait)%s",
				answered, s.want, messages.AgentService, s.cfg.agentWait, missingRoles(seen))
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
	if s.want > 0 && missingRoles(seen) != "" {
		// The agents counted were the first to answer: the others answer
		// the same request within moments.
		stats, _ := s.cl.AgentStats(ctx, participant.StatsWait{Max: 500 * time.Millisecond})
		for _, a := range stats {
			seen[a.Role] = true
		}
	}
	for _, role := range roles() {
		if s.want > 0 && !seen[role] {
			// Not fatal: an agent restarting is waited for, as the run goes
			// on; but with none running the run cannot go far.
			s.log.Warn(fmt.Sprintf("no %s agent answered (micro service %s), though %d agents did (-expect-agents): "+
				"the run needs one for the %[1]s's steps and state queries; is one running?", role, messages.AgentService, s.want),
				"role", role)
		}
	}
	s.log.Info("agents ready", "agents", s.want)
	return nil
}

// missingRoles says which of the agent roles are not in seen ("; no
// insurer or contractor agent answered"), "" when none is missing.
func missingRoles(seen map[string]bool) string {
	var missing []string
	for _, role := range roles() {
		if !seen[role] {
			missing = append(missing, role)
		}
	}
	switch len(missing) {
	case 0:
		return ""
	case len(roles()):
		return "; no agent of any role answered"
	}
	return fmt.Sprintf("; no %s agent answered", strings.Join(missing, " or "))
}

// simulate runs the ticks and returns the report.
func (s *sim) simulate(ctx context.Context) (*report, error) {
	began := time.Now()
	base, err := s.cl.Summary(ctx)
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
	if base.Active > 0 {
		s.earlier = base.Active
		fmt.Fprintf(s.out, "floodsim: note: the coordinator holds %d sagas in flight that are not this run's (an earlier run's, stopped): "+
			"they run in this run's ticks, spend its ledgers and change its households and houses, so its invariants may not hold\n", base.Active)
	}
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
		if _, err := s.cl.WithAttempts(s.patience()).Tick(ctx, tick); err != nil {
			return nil, err
		}
		if err := s.settleAndReport(ctx, t, tick, n, base, tickStart); err != nil {
			return nil, err
		}
	}
	// Let the sagas still running end: they time out if nothing else.
	for s.extra < s.cfg.maxExtraTicks && s.aborted == "" {
		sum, err := s.cl.Summary(ctx)
		if err != nil {
			return nil, err
		}
		if sum.Active == 0 {
			break
		}
		s.extra++
		t := s.sc.Options.Ticks + s.extra
		tickStart := time.Now()
		if _, err := s.cl.WithAttempts(s.patience()).Tick(ctx, base.Tick+int64(t)); err != nil {
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

// startAll schedules the sagas of needs for tick, in batches
// ([client.Client.StartMany]), and returns how many the coordinator
// accepted. Each saga's rank is its place in the driver's start order, and
// its id is derived from the seed, the clock the run began at (base) and
// the rank, so that two runs can be compared saga by saga.
func (s *sim) startAll(ctx context.Context, needs []flood.Need, base, tick int64) int {
	starts := make([]client.Start, len(needs))
	for i, need := range needs {
		s.rank++
		starts[i] = client.Start{Saga: need.Saga, ID: sagaID(s.sc.Options.Seed, base, s.rank), Rank: s.rank, Tick: tick, Context: need.Context()}
	}
	_, errs := s.cl.StartMany(ctx, starts, startConcurrency)
	n, stopped := 0, 0
	for i, err := range errs {
		id, need := starts[i].ID, needs[i]
		if err != nil {
			// The coordinator may have started it all the same; the
			// final status tells.
			s.uncertain[id] = need.Saga
			s.startErrs = append(s.startErrs, fmt.Sprintf("tick %d: %s saga for %s: %v", need.Tick, need.Saga, need.Household, err))
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				stopped++ // the run is stopping: said once, below
				continue
			}
			s.log.Error("saga not started", "saga", need.Saga, "saga_id", id, "tick", need.Tick, "err", err)
			continue
		}
		s.started[id] = need.Saga
		n++
	}
	if stopped > 0 {
		s.log.Warn("sagas not started: the run was stopped", "sagas", stopped, "tick", tick, "cause", context.Cause(ctx))
	}
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
	if err == nil {
		var ins flood.Ledger
		if ins, err = s.ledger(ctx, flood.Insurer); err == nil {
			s.printTick(t, tick, started, sum, base, began, &gov, &ins)
			return nil
		}
	}
	if s.aborted == "" {
		return err
	}
	// The run stops at this tick, and an agent gone is what held it, so
	// its ledger may not be read: the tick is reported without them.
	s.log.Warn("ledgers not read at the tick that stopped the run", "tick", tick, "err", err)
	s.printTick(t, tick, started, sum, base, began, nil, nil)
	return nil
}

// printTick records and prints the row of tick, the t-th of the run, which
// started started sagas and settled at sum, with the ledgers after it (nil
// when they could not be read: zero in the row, "not read" printed).
func (s *sim) printTick(t int, tick int64, started int, sum, base messages.Summary, began time.Time, gov, ins *flood.Ledger) {
	budget := "not read"
	if gov == nil || ins == nil {
		gov, ins = &flood.Ledger{}, &flood.Ledger{}
	} else {
		budget = money(gov.Balance)
	}
	s.rows = append(s.rows, tickRow{T: t, Tick: tick, Started: started, Active: sum.Active,
		Completed: sum.Completed - base.Completed, RolledBack: sum.RolledBack - base.RolledBack,
		TimedOut: sum.TimedOut - base.TimedOut, Failed: sum.Failed - base.Failed,
		Budget: gov.Balance, Fund: ins.Balance, Quiet: s.aborted == "", WallMS: time.Since(began).Milliseconds(),
		Extra: t > s.sc.Options.Ticks})
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
		sum.TimedOut-base.TimedOut, sum.Failed-base.Failed, budget, time.Since(began).Seconds(), note)
	s.tickTimes = append(s.tickTimes, time.Since(began))
}

// settle waits until tick is quiet: no command due at or before it lacks
// its final answer (Summary.Due is 0). Meanwhile it repeats the tick every
// retickInterval, so that an agent restarted since learns the time. When
// the due count has not changed for -tick-wait, an agent broke its word
// (it is gone, or late): settle sets s.aborted and returns, since the run
// can no longer be reproduced.
func (s *sim) settle(ctx context.Context, tick int64) (messages.Summary, error) {
	sum, err := s.cl.WithAttempts(s.patience()).WaitQuiet(ctx, client.Quiet{Poll: pollInterval, Limit: s.cfg.tickWait, Retick: retickInterval})
	var nq *client.NotQuietError
	if errors.As(err, &nq) {
		s.aborted = fmt.Sprintf("tick %d: %d commands due had no answer for %s (-tick-wait)", tick, sum.Due, s.cfg.tickWait)
		if w := nq.WaitingFor(); w != "" {
			s.aborted += "; " + w
		}
		s.log.Error("tick not quiet; stopping", "tick", tick, "due", sum.Due, "active", sum.Active)
		return sum, nil
	}
	return sum, err
}

// requestTimeout bounds one request to the coordinator; a request that
// times out is sent again, identical, so that it stays idempotent.
const requestTimeout = 5 * time.Second

// restartPatience is how long a request waits for a coordinator that does
// not answer at all, as for one restarting: a whole NATS cluster down for
// half a minute, then JetStream recovering its streams, kept the
// coordinator from answering for over a minute.
const restartPatience = 5 * time.Minute

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

// query asks role's agents the state query q (flood.StateSubject), and
// asks again for up to -agent-wait while none answers, since an agent or
// the server may be restarting; once the run has stopped ticking, it asks
// once. No agent of the role answering at all (nats.ErrNoResponders) is
// said plainly, in the warnings and the error.
func (s *sim) query(ctx context.Context, role string, q flood.StateQuery) (flood.StateAnswer, error) {
	subject := flood.StateSubject(role)
	data, err := json.Marshal(q)
	if err != nil {
		return flood.StateAnswer{}, err
	}
	// The run stopped because a process broke its word: it is asked once,
	// not waited for.
	once := s.aborted != ""
	patience := time.Now().Add(s.cfg.agentWait)
	if once {
		patience = time.Now()
	}
	for {
		var a flood.StateAnswer
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		m, err := s.cl.Conn().RequestWithContext(rctx, subject, data)
		cancel()
		if err == nil {
			if err = messages.Decode(m.Data, &a); err == nil && a.Error != nil {
				err = a.Error
			}
			if err == nil {
				s.answered(role)
				return a, nil
			}
			if tooLarge(err) {
				// Asked again, it would be as large: the asker asks
				// for less.
				s.answered(role)
				return a, fmt.Errorf("%s: %w", subject, err)
			}
		}
		if ctx.Err() != nil || time.Now().After(patience) {
			// Said only when it was waited for: a run stopped or given up
			// on asks once.
			waited := ctx.Err() == nil && !once
			if errors.Is(err, nats.ErrNoResponders) {
				if waited {
					return a, fmt.Errorf("%s: no %s agent answered within %s (-agent-wait; is one running?): %w",
						subject, role, s.cfg.agentWait, err)
				}
				return a, fmt.Errorf("%s: no %s agent is answering (is one running?): %w", subject, role, err)
			}
			if waited {
				return a, fmt.Errorf("%s: not answered within %s (-agent-wait): %w", subject, s.cfg.agentWait, err)
			}
			return a, fmt.Errorf("%s: %w", subject, err)
		}
		s.unansweredWarn(role, err)
		select {
		case <-ctx.Done():
		case <-time.After(queryRetry):
		}
	}
}

// unansweredWarn logs that role's state query was not answered (err): the
// first time, and then at most every queryWarnInterval, however many
// queries ask meanwhile.
func (s *sim) unansweredWarn(role string, err error) {
	s.unansweredMu.Lock()
	defer s.unansweredMu.Unlock()
	now := time.Now()
	u := s.unanswered[role]
	if u == nil {
		if s.unanswered == nil {
			s.unanswered = map[string]*unanswered{}
		}
		u = &unanswered{since: now}
		s.unanswered[role] = u
	} else if now.Sub(u.logged) < queryWarnInterval {
		return
	}
	u.logged = now
	msg := "state query not answered; asking again"
	if errors.Is(err, nats.ErrNoResponders) {
		msg = fmt.Sprintf("no %s agent is answering its state query (is one running?); "+
			"asking again, as for an agent restarting, for up to -agent-wait", role)
	}
	s.log.Warn(msg, "role", role, "waited", now.Sub(u.since).Round(time.Second).String(),
		"patience", s.cfg.agentWait.String(), "err", err)
}

// answered notes that role's state query was answered: a later failure is
// warned about at once.
func (s *sim) answered(role string) {
	s.unansweredMu.Lock()
	defer s.unansweredMu.Unlock()
	if u := s.unanswered[role]; u != nil {
		s.log.Info("state query answered again", "role", role, "waited", time.Since(u.since).Round(time.Millisecond).String())
		delete(s.unanswered, role)
	}
}

// ledger asks role's agents for its ledger (the zero ledger when it has
// none yet).
func (s *sim) ledger(ctx context.Context, role string) (flood.Ledger, error) {
	a, err := s.query(ctx, role, flood.StateQuery{V: messages.Version, Ledger: true})
	if err != nil || a.Ledger == nil {
		return flood.Ledger{}, err
	}
	return *a.Ledger, nil
}

// houses asks role's agents for their record of every household of the
// scenario, flood.MaxQueryHouseholds at a time. The first query that fails
// ends the others, so that a role with no agent fails within one
// -agent-wait, not one for each round of queries a large scenario needs.
func (s *sim) houses(ctx context.Context, role string) (flood.Houses, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		hs    = flood.Houses{}
		first error
		wg    sync.WaitGroup
	)
	// Each query waits for its reads, one at a time: the queries go out
	// side by side, as many as the agents answer at once.
	sem := make(chan struct{}, participant.QueryConcurrency)
	for batch := range slices.Chunk(s.sc.Homes, flood.MaxQueryHouseholds) {
		q := flood.StateQuery{V: messages.Version}
		for _, h := range batch {
			q.Households = append(q.Households, h.ID)
		}
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			a, err := s.splitQuery(ctx, role, q)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// The queries this ends fail after it: the first error
				// stays the one said.
				first = cmp.Or(first, err)
				cancel()
				return
			}
			maps.Copy(hs, a.Households)
		})
	}
	wg.Wait()
	// A run stopped before a query was sent has no error of a query.
	if first = cmp.Or(first, ctx.Err()); first != nil {
		return nil, first
	}
	return hs, nil
}

// splitQuery is query for q's households; an answer too large for a
// message (a household's record grows with each of its sagas, run after
// run on one server) is asked again as two queries of half the households
// each, down to one.
func (s *sim) splitQuery(ctx context.Context, role string, q flood.StateQuery) (flood.StateAnswer, error) {
	a, err := s.query(ctx, role, q)
	if err == nil || !tooLarge(err) {
		return a, err
	}
	if len(q.Households) == 1 {
		return a, fmt.Errorf("household %s: its %s record alone is too large for a state answer "+
			"(each of its sagas adds to it, run after run on this server: start from a fresh one): %w", q.Households[0], role, err)
	}
	half := len(q.Households) / 2
	all := flood.StateAnswer{V: a.V, Households: flood.Houses{}}
	for _, part := range [][]string{q.Households[:half], q.Households[half:]} {
		pa, err := s.splitQuery(ctx, role, flood.StateQuery{V: q.V, Households: part})
		if err != nil {
			return pa, err
		}
		all.V = pa.V
		maps.Copy(all.Households, pa.Households)
	}
	return all, nil
}

// tooLarge reports whether err says that an answer was too large: for
// floodsim to read (messages.MaxPayload), or for the server to carry (the
// agent's too_large answer).
func tooLarge(err error) bool {
	var we *messages.WireError
	return errors.Is(err, messages.ErrTooLarge) || errors.As(err, &we) && we.Code == messages.CodeTooLarge
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
