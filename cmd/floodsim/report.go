package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// statusConcurrency bounds the status requests in flight at once.
const statusConcurrency = 16

// report is the outcome of a run. Its JSON form is floodsim's -json
// report: "sagas", "agents" and "invariants" are the contract, the rest is
// there to read.
type report struct {
	// Sagas counts, per saga type, the sagas the run started by final
	// status; a saga the coordinator no longer knows counts as "lost".
	Sagas map[string]map[string]int `json:"sagas"`
	// Agents has one entry per agent process that answered.
	Agents     []messages.AgentStats `json:"agents"`
	Invariants invariants            `json:"invariants"`

	// Outcomes counts the sagas by how they ended (see flood.Classify).
	Outcomes map[flood.Outcome]int `json:"outcomes"`
	// MissingOutcomes lists the required outcomes not seen.
	MissingOutcomes []flood.Outcome `json:"missing_outcomes"`
	// HouseholdsFull counts the rollbacks of households that already kept
	// flood.MaxApplications applications (flood.HouseholdFull), counted
	// among the outcome rolled_back_other: the model has run many times
	// on one server.
	HouseholdsFull int   `json:"households_full,omitempty"`
	Seed           int64 `json:"seed"`
	Households     int   `json:"households"`
	Ticks          int   `json:"ticks"`
	// ExtraTicks were run after Ticks for the last sagas to end.
	ExtraTicks int `json:"extra_ticks"`
	// InFlightAtStart counts the sagas the coordinator held in flight
	// when the run began, not the run's: they spend its ledgers.
	InFlightAtStart int `json:"in_flight_at_start,omitempty"`
	// Aborted says why the run stopped ticking early, if it did: a tick
	// that did not become quiet within -tick-wait.
	Aborted string `json:"aborted,omitempty"`
	// OutcomesSHA256 is the SHA-256, in hex, of the run's outcome log
	// (-outcomes): the same seed, scenario and ledgers give the same.
	OutcomesSHA256 string `json:"outcomes_sha256"`
	// TickMS are the wall-clock times of the ticks, median and max, in
	// milliseconds.
	TickMS tickTimes `json:"tick_ms"`
	Mode   string    `json:"mode"`
	// Planned counts the sagas the scenario planned, per type.
	Planned  map[string]int                `json:"planned"`
	Expected flood.Expected                `json:"expected"`
	Ledgers  map[string]flood.LedgerChange `json:"ledgers"`
	// StartErrors lists the starts the coordinator never confirmed.
	StartErrors []string  `json:"start_errors,omitempty"`
	Durations   durations `json:"durations"`
	// PerTick has a row per tick of the run; Timeline, the history of a
	// sample of its sagas (see sampleTimeline). The HTML report draws
	// them.
	PerTick  []tickRow      `json:"per_tick"`
	Timeline []timelineSaga `json:"timeline"`
	// LateAgents counts the agents that answered at the end beyond those
	// the run waited for at the start (-expect-agents).
	LateAgents int `json:"late_agents,omitempty"`
}

type invariants struct {
	OK         bool     `json:"ok"`
	Violations []string `json:"violations"`
}

type tickTimes struct {
	Median float64 `json:"median"`
	Max    float64 `json:"max"`
}

// summarize returns the median and max of ds in milliseconds.
func summarize(ds []time.Duration) tickTimes {
	if len(ds) == 0 {
		return tickTimes{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	med := ms(s[len(s)/2])
	if len(s)%2 == 0 {
		med = (ms(s[len(s)/2-1]) + ms(s[len(s)/2])) / 2
	}
	return tickTimes{Median: med, Max: ms(s[len(s)-1])}
}

type durations struct {
	SetupMS      int64 `json:"setup_ms"`
	SimulationMS int64 `json:"simulation_ms"`
	TotalMS      int64 `json:"total_ms"`
}

// collect reads the final state of every saga the run started, the
// ledgers, the households' and the contractor's records and the agents'
// statistics, and checks the invariants.
func (s *sim) collect(ctx context.Context, gov, ins flood.LedgerChange, contractorBefore flood.Houses) (*report, error) {
	ids := make(map[string]string, len(s.started)+len(s.uncertain))
	for id, typ := range s.started {
		ids[id] = typ
	}
	for id, typ := range s.uncertain {
		ids[id] = typ
	}
	final, err := s.finalStates(ctx, ids)
	if err != nil {
		return nil, err
	}
	// final holds the run's sagas only, and every one of them started
	// (those of s.uncertain it holds started after all): the outcome log
	// and the timeline are drawn from it as it is, with no copy kept
	// beside it but the one the outcome log needs. The log needs only
	// the coordinator: it is made before the agents are asked for their
	// state, so that a run an agent stopped still writes it.
	xs := slices.AppendSeq(make([]saga.Execution, 0, len(final)), maps.Values(final))
	var digest string
	if s.outcomeLog, digest, err = saga.OutcomeLogWith(xs, wirejson.AppendOutcomeLine); err != nil {
		return nil, err
	}
	started := make(map[string]string, len(ids))
	for id, typ := range s.started {
		started[id] = typ
	}
	for id, typ := range s.uncertain {
		if _, ok := final[id]; ok { // started after all
			started[id] = typ
		}
	}
	if gov.After, err = s.ledger(ctx, flood.Government); err != nil {
		return nil, err
	}
	if ins.After, err = s.ledger(ctx, flood.Insurer); err != nil {
		return nil, err
	}
	households, err := s.houses(ctx, flood.Household)
	if err != nil {
		return nil, err
	}
	contractorAfter, err := s.houses(ctx, flood.Contractor)
	if err != nil {
		return nil, err
	}
	violations := flood.CheckInvariants(flood.Observation{
		Started: started, Final: final, Government: gov, Insurer: ins,
		Households: households, ContractorBefore: contractorBefore, ContractorAfter: contractorAfter,
	})
	if n := len(ids) - len(started); n > 0 {
		violations = append(violations, fmt.Sprintf("%d sagas could not be started (see start_errors)", n))
	}

	r := &report{
		Sagas: map[string]map[string]int{}, Outcomes: map[flood.Outcome]int{},
		Invariants: invariants{OK: len(violations) == 0, Violations: append([]string{}, violations...)},
		Seed:       s.sc.Options.Seed, Households: s.sc.Options.Households, Ticks: s.sc.Options.Ticks,
		ExtraTicks: s.extra, Aborted: s.aborted, InFlightAtStart: s.earlier, Mode: "external", TickMS: summarize(s.tickTimes),
		Planned: s.sc.Count(), Expected: s.sc.Expected,
		Ledgers:     map[string]flood.LedgerChange{flood.Government: gov, flood.Insurer: ins},
		StartErrors: s.startErrs,
	}
	if s.cfg.spawn {
		r.Mode = "spawn"
	}
	for _, d := range flood.Definitions() {
		r.Sagas[d.Subject] = map[string]int{}
		for _, st := range []saga.Status{saga.Completed, saga.RolledBack, saga.TimedOut, saga.Failed} {
			r.Sagas[d.Subject][string(st)] = 0
		}
	}
	for _, o := range flood.RequiredOutcomes() {
		r.Outcomes[o] = 0
	}
	r.OutcomesSHA256 = digest
	for id, typ := range started {
		if r.Sagas[typ] == nil {
			r.Sagas[typ] = map[string]int{}
		}
		x, ok := final[id]
		if !ok {
			r.Sagas[typ]["lost"]++
			r.Outcomes[flood.OutcomeUnfinished]++
			continue
		}
		r.Sagas[typ][string(x.Status)]++
		r.Outcomes[flood.Classify(&x)]++
		if flood.HouseholdFull(&x) {
			r.HouseholdsFull++
		}
	}
	r.MissingOutcomes = append([]flood.Outcome{}, flood.MissingOutcomes(r.Outcomes)...)

	// Every agent answering counts, those that joined during the run
	// too: the statistics are gathered for statsGrace after the agents
	// the run waited for have answered (for statsWait when one of them
	// does not).
	if r.Agents, err = s.cl.AgentStats(ctx, participant.StatsWait{Want: s.want, Grace: statsGrace, Max: statsWait}); err != nil {
		return nil, err
	}
	r.LateAgents = max(len(r.Agents)-s.want, 0)
	r.PerTick = s.rows
	if r.Timeline, err = s.timeline(ctx, final); err != nil {
		return nil, err
	}
	order := roles()
	slices.SortFunc(r.Agents, func(a, b messages.AgentStats) int {
		return cmp.Or(cmp.Compare(slices.Index(order, a.Role), slices.Index(order, b.Role)), cmp.Compare(a.Agent, b.Agent))
	})
	return r, nil
}

// finalStates returns the final state of each saga of ids that the
// coordinator knows, and leaves out a saga it does not know. A saga read
// from the bucket holds only the last transition of its history
// (client.ScanEnded): what the outcome log and the invariants read. It reads them
// from the saga bucket in one pass, keeping only the sagas of ids: the
// bucket may hold sagas of earlier runs and of others. A saga that
// finished other than failed is stored once and for all when it finishes,
// and a status request for it reads the same value from the bucket. The
// others are asked for one by one: an active saga's stored state may be
// steps behind the coordinator's, a failed one may be retried, and a saga
// the bucket does not hold may never have started. When the bucket cannot
// be read, every saga not read yet is asked for.
func (s *sim) finalStates(ctx context.Context, ids map[string]string) (map[string]saga.Execution, error) {
	final := make(map[string]saga.Execution, len(ids))
	ofRun := func(id string) bool {
		_, ok := ids[id]
		return ok
	}
	for x, err := range s.cl.ScanEnded(ctx, ofRun) {
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("final saga states: %w", err)
			}
			// A driver whose user may not read the bucket (an older
			// deployment's permissions) still gets its report, asked
			// saga by saga.
			s.log.Warn("saga bucket not read; asking the coordinator saga by saga", "err", err)
			break
		}
		if x.Status.Terminal() && x.Status != saga.Failed {
			final[x.ID] = x
		}
	}
	var rest []string
	for id := range ids {
		if _, ok := final[id]; !ok {
			rest = append(rest, id)
		}
	}
	s.log.Debug("final saga states", "stored", len(final), "asked", len(rest))
	if err := s.askStates(ctx, rest, final); err != nil {
		return nil, fmt.Errorf("final saga states: %w", err)
	}
	return final, nil
}

// timeline samples the run's sagas for the HTML report's timeline
// (sampleTimeline) and asks the coordinator for the whole history of each
// sampled saga, which the final states read from the bucket leave out.
func (s *sim) timeline(ctx context.Context, final map[string]saga.Execution) ([]timelineSaga, error) {
	sample := sampleTimeline(final)
	ids := make([]string, len(sample))
	for i := range sample {
		ids[i] = sample[i].ID
	}
	full := make(map[string]saga.Execution, len(ids))
	if err := s.askStates(ctx, ids, full); err != nil {
		return nil, fmt.Errorf("timeline: %w", err)
	}
	for i := range sample {
		if x, ok := full[ids[i]]; ok {
			sample[i].History = x.History
		}
	}
	return sample, nil
}

// askStates asks the coordinator for the state of each saga of ids, at
// most statusConcurrency at a time, and adds those it knows to final.
func (s *sim) askStates(ctx context.Context, ids []string, final map[string]saga.Execution) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for range min(statusConcurrency, len(ids)) {
		wg.Go(func() {
			for id := range work {
				x, err := s.cl.Status(ctx, id)
				mu.Lock()
				switch {
				case errors.Is(err, client.ErrNotFound):
				case err != nil:
					if firstErr == nil {
						firstErr = err
						cancel()
					}
				default:
					final[id] = x
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, id := range ids {
		select {
		case work <- id:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// print writes r as readable text.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\n== floodsim report: seed %d, %d households, %d ticks (+%d extra), %.1fs ==\n",
		r.Seed, r.Households, r.Ticks, r.ExtraTicks, float64(r.Durations.TotalMS)/1000)
	statuses := []string{string(saga.Completed), string(saga.RolledBack), string(saga.TimedOut), string(saga.Failed)}
	fmt.Fprintf(w, "%-10s %8s", "saga", "started")
	for _, st := range statuses {
		fmt.Fprintf(w, " %11s", st)
	}
	fmt.Fprintln(w)
	totals := map[string]int{}
	lost := 0
	var types []string
	for _, d := range flood.Definitions() {
		types = append(types, d.Subject)
	}
	for _, typ := range types {
		counts := r.Sagas[typ]
		fmt.Fprintf(w, "%-10s %8d", typ, total(counts))
		for _, st := range statuses {
			fmt.Fprintf(w, " %11d", counts[st])
			totals[st] += counts[st]
		}
		if n := counts["lost"]; n > 0 {
			fmt.Fprintf(w, "  LOST %d", n)
			lost += n
		}
		fmt.Fprintln(w)
		totals[""] += total(counts)
	}
	fmt.Fprintf(w, "%-10s %8d", "total", totals[""])
	for _, st := range statuses {
		fmt.Fprintf(w, " %11d", totals[st])
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "rollbacks: budget exhausted %d, damage at or below the deductible %d, site unsuitable %d, fund exhausted %d, other %d\n",
		r.Outcomes[flood.OutcomeBudget], r.Outcomes[flood.OutcomeDeductible], r.Outcomes[flood.OutcomeContractor],
		r.Outcomes[flood.OutcomeFund], r.Outcomes[flood.OutcomeRolledBackOther])
	if r.HouseholdsFull > 0 {
		fmt.Fprintf(w, "  (%d of the other rollbacks: households that already kept %d applications, the most they may; this server has run the model"+
			" many times, and its outcomes are no longer the scenario's: start the server afresh, docs/simulation.md)\n",
			r.HouseholdsFull, flood.MaxApplications)
	}

	gov, ins := r.Ledgers[flood.Government], r.Ledgers[flood.Insurer]
	fmt.Fprintf(w, "government budget: %s at the start, %s left; spent in the run: subsidies %s, elevation grants %s\n",
		money(gov.Before.Balance), money(gov.After.Balance), money(gov.Spent(flood.Subsidy)), money(gov.Spent(flood.Elevation)))
	fmt.Fprintf(w, "insurer fund:      %s at the start, %s left; spent in the run: payouts %s\n",
		money(ins.Before.Balance), money(ins.After.Balance), money(ins.Spent(flood.Insurance)))

	fmt.Fprintf(w, "agents (%d processes):\n", len(r.Agents))
	if r.LateAgents > 0 {
		fmt.Fprintf(w, "  (%d more than the %d expected answered: copies that joined during the run, or other agents on the same server)\n",
			r.LateAgents, len(r.Agents)-r.LateAgents)
	}
	for _, a := range r.Agents {
		// Their names come from anyone who answers discovery: what a
		// terminal would act on is escaped.
		batches := ""
		if a.Messages > 0 && a.Messages < a.Handled {
			batches = fmt.Sprintf("  in %d messages", a.Messages)
		}
		if a.Batches > 0 {
			batches += fmt.Sprintf("  batches %d of %.1f", a.Batches, float64(a.Batched)/float64(a.Batches))
		}
		fmt.Fprintf(w, "  %-10s %-14s pid %-7d handled %5d  executed %5d  compensated %4d  duplicates %3d  refused %3d  redelivered %3d  rejected %3d%s\n",
			cli.Escape(a.Role), cli.Escape(a.Agent), a.PID, a.Handled, a.Executed, a.Compensated, a.Duplicates, a.Refused, a.Redelivered, a.Rejected, batches)
	}
	fmt.Fprintf(w, "ticks: median %.0f ms, max %.0f ms\n", r.TickMS.Median, r.TickMS.Max)
	fmt.Fprintf(w, "outcome log SHA-256: %s\n", r.OutcomesSHA256)
	if r.Aborted != "" {
		fmt.Fprintf(w, "ABORTED: %s\n", r.Aborted)
	}
	if r.Invariants.OK {
		fmt.Fprintf(w, "invariants: ok (%d sagas, every one terminal, none failed; ledgers match the completed sagas)\n", totals[""])
	} else {
		fmt.Fprintf(w, "invariants: VIOLATED (%d):\n", len(r.Invariants.Violations))
		for _, v := range r.Invariants.Violations {
			fmt.Fprintf(w, "  - %s\n", v)
		}
		if r.InFlightAtStart > 0 {
			fmt.Fprintf(w, "  (the coordinator held %d sagas of an earlier run when this one began: they ran in its ticks and spent its ledgers)\n",
				r.InFlightAtStart)
		}
		if n := lost; n > 0 {
			fmt.Fprintf(w, "  (%d sagas lost: neither the bucket nor the coordinator holds them; a saga that ended is kept in the bucket "+
				"for the coordinator's -retention, 7 days by default: one shorter than the run expires sagas before the report reads them)\n", n)
		}
	}
	if len(r.MissingOutcomes) == 0 {
		fmt.Fprintf(w, "outcomes: every one seen (%s)\n", joinOutcomes(flood.RequiredOutcomes()))
	} else {
		fmt.Fprintf(w, "outcomes: MISSING %s\n", joinOutcomes(r.MissingOutcomes))
	}
}

func joinOutcomes(os []flood.Outcome) string {
	s := make([]string, len(os))
	for i, o := range os {
		s[i] = string(o)
	}
	return strings.Join(s, ", ")
}

// writeJSON writes r, indented, to out.
func (r *report) writeJSON(out *output) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("JSON report: %w", err)
	}
	if err := out.write(append(data, '\n')); err != nil {
		return fmt.Errorf("JSON report: %w", err)
	}
	return nil
}

// money formats cents as units with thousands separators: 123456789 is
// "1,234,567.89".
func money(cents int64) string {
	sign := ""
	if cents < 0 {
		sign, cents = "-", -cents
	}
	units := fmt.Sprint(cents / 100)
	var b strings.Builder
	for i, d := range units {
		if i > 0 && (len(units)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	return fmt.Sprintf("%s%s.%02d", sign, b.String(), cents%100)
}
