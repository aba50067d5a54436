package fuzz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// payment is the step of a saga type that moves money: the role whose
// ledger pays, and the output key under which it records the amount.
type payment struct{ step, role, key string }

var payments = map[string]payment{
	flood.Subsidy:   {"budget_deducted", flood.Government, flood.KeySubsidyPaid},
	flood.Insurance: {"payout_issued", flood.Insurer, flood.KeyPayoutReceived},
	flood.Elevation: {"government_approves", flood.Government, flood.KeyGrant},
}

// midway checks, after every batch of the wire fuzzer, what must hold
// while sagas are still in flight. It reads each saga until it is
// terminal and has been checked once; after that its state, its money and
// its household's record are final.
type midway struct {
	s      *system
	stores map[string]*participant.Store
	// seen is each saga's state at the last check.
	seen map[string]saga.Execution
	// settled marks the terminal sagas already checked, and held is the
	// money they hold, by saga type.
	settled map[string]bool
	held    map[string]int64
	// owned marks the "saga/step" outputs found to be their role's record.
	owned map[string]bool
	// paysAt is the index of each saga type's payment step.
	paysAt map[string]int
}

func newMidway(s *system) *midway {
	m := &midway{s: s, stores: map[string]*participant.Store{}, seen: map[string]saga.Execution{},
		settled: map[string]bool{}, held: map[string]int64{}, owned: map[string]bool{}, paysAt: map[string]int{}}
	for _, d := range flood.Definitions() {
		i := slices.IndexFunc(d.Steps, func(st saga.Step) bool { return st.Name == payments[d.Subject].step })
		require.GreaterOrEqual(s.t, i, 0, "%s has no step %s", d.Subject, payments[d.Subject].step)
		require.Equal(s.t, payments[d.Subject].role, d.Steps[i].Role, "%s's payment", d.Subject)
		m.paysAt[d.Subject] = i
	}
	for _, role := range agentRoles {
		st, err := participant.OpenStore(context.Background(), s.inspector, role, false, 1)
		require.NoError(s.t, err)
		m.stores[role] = st
	}
	return m
}

// reason is why a snapshot did not add up, printed when the wait for one
// that does ends.
type reason struct{ s string }

func (r *reason) String() string { return r.s }

// check runs after batch: every process is alive and answers; the clock
// is at tick, where the accepted ticks left it; every saga a refused
// input of the batch aimed at (touched) only moved on as a saga does; and
// a consistent snapshot of the sagas, their records and the ledgers meets
// [midway.snapshot]'s invariants.
func (m *midway) check(batch int, tick int64, touched map[string]bool) {
	t := m.s.t
	t.Helper()
	m.s.alive()
	m.s.waitAgents(len(agentRoles))
	var sum messages.Summary
	m.s.request(messages.SummarySubject, struct{}{}, &sum)
	require.Equal(t, tick, sum.Tick, "batch %d moved the clock", batch)

	for id := range touched {
		before, ok := m.seen[id]
		if !ok {
			continue // started in this batch
		}
		now := m.s.status(id)
		if m.settled[id] {
			require.Equal(t, jsonOf(t, before), jsonOf(t, now), "batch %d changed terminal saga %s", batch, id)
			continue
		}
		successor(t, batch, before, now)
	}

	why := &reason{}
	require.Eventually(t, func() bool {
		why.s = m.snapshot()
		return why.s == ""
	}, 30*time.Second, 20*time.Millisecond, "after batch %d: %s", batch, why)
}

// successor fails the test unless now is what before can become by the
// saga's own progress: the same saga, its steps completed, compensated,
// its history and the results it had all kept, none rewritten.
func successor(t require.TestingT, batch int, before, now saga.Execution) {
	id := before.ID
	require.Equal(t, before.Saga, now.Saga, "batch %d: saga %s", batch, id)
	require.GreaterOrEqual(t, now.Seq, before.Seq, "batch %d: saga %s went back", batch, id)
	for _, l := range []struct {
		name      string
		was, is   any
		wasN, isN int
	}{
		{"completed", before.Completed, now.Completed[:min(len(before.Completed), len(now.Completed))], len(before.Completed), len(now.Completed)},
		{"compensated", before.Compensated, now.Compensated[:min(len(before.Compensated), len(now.Compensated))], len(before.Compensated), len(now.Compensated)},
		{"history", before.History, now.History[:min(len(before.History), len(now.History))], len(before.History), len(now.History)},
	} {
		require.LessOrEqual(t, l.wasN, l.isN, "batch %d: saga %s lost %s entries", batch, id, l.name)
		require.Equal(t, fmt.Sprint(l.was), fmt.Sprint(l.is), "batch %d: saga %s rewrote its %s", batch, id, l.name)
	}
	for _, step := range before.Completed {
		require.Equal(t, fmt.Sprint(before.Results[step]), fmt.Sprint(now.Results[step]), "batch %d: saga %s: step %s's result changed", batch, id, step)
	}
}

func jsonOf(t require.TestingT, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// snapshot reads the ledgers, the payment records and the state of every
// saga not yet settled, and the ledgers again, and returns why they break
// an invariant, "" when they hold:
//
//   - each ledger's balance is not negative, and its opening amount less
//     its balance is what it spent;
//   - a saga whose paying role recorded its payment (and no refund) has
//     reached that step, and the coordinator counts the payment exactly
//     then: the step is completed and not compensated;
//   - the payment recorded is the saga's amount ([flood.Amount]), and
//     what each ledger spent per saga type is the sum over the sagas that
//     hold a payment: no money moved for a saga that did not pay;
//   - every step a saga completed has, as its result, the output its
//     owning role recorded;
//   - a saga that ended, completed, has its household's application
//     recorded and not cancelled, and otherwise absent or cancelled.
//
// Money in flight (a payment recorded and not yet answered) makes a
// snapshot fail; the caller reads again until one holds.
func (m *midway) snapshot() string {
	t := m.s.t
	ctx := context.Background()
	ledgers := func() (map[string]flood.Ledger, map[string]uint64) {
		ls, seqs := map[string]flood.Ledger{}, map[string]uint64{}
		for _, role := range []string{flood.Government, flood.Insurer} {
			var l flood.Ledger
			seq, err := m.stores[role].Get(ctx, flood.LedgerKey, &l)
			require.NoError(t, err)
			ls[role], seqs[role] = l, seq
		}
		return ls, seqs
	}
	ls, seqs := ledgers()
	for role, l := range ls {
		if l.Balance < 0 || l.Initial-l.Balance != l.SpentTotal() {
			return fmt.Sprintf("%s ledger: initial %d, balance %d, spent %d", role, l.Initial, l.Balance, l.SpentTotal())
		}
	}
	ids := make([]string, 0, len(m.s.started))
	for id := range m.s.started {
		if !m.settled[id] {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	// A record comes before the answer the coordinator counts, so the
	// records are read before the sagas.
	paid := map[string]*messages.Result{}
	for _, id := range ids {
		p := payments[m.s.started[id]]
		rec, _, err := m.stores[p.role].Branch(ctx, id, p.step)
		require.NoError(t, err)
		if rec.Execute.Done() && rec.Execute.Outcome == messages.OK && !rec.Compensate.Done() {
			paid[id] = rec.Execute
		}
	}
	xs := map[string]saga.Execution{}
	for _, id := range ids {
		xs[id] = m.s.status(id)
	}
	if _, again := ledgers(); fmt.Sprint(again) != fmt.Sprint(seqs) {
		return "a ledger moved while it was read"
	}

	held := map[string]int64{}
	for k, v := range m.held {
		held[k] = v
	}
	for _, id := range ids {
		x := xs[id]
		p := payments[x.Saga]
		reached := slices.Contains(x.Completed, p.step) || x.Current >= m.paysAt[x.Saga]
		holds := slices.Contains(x.Completed, p.step) && !slices.Contains(x.Compensated, p.step)
		switch rec := paid[id]; {
		case rec != nil && !reached:
			return fmt.Sprintf("saga %s (%s) paid at %s, a step it has not reached (current %d)", id, x.Saga, p.step, x.Current)
		case (rec != nil) != holds:
			return fmt.Sprintf("saga %s (%s): %s recorded a payment: %v, the coordinator counts one: %v", id, x.Saga, p.role, rec != nil, holds)
		case holds:
			_, cents, err := flood.Amount(&x)
			if err != nil {
				return err.Error()
			}
			if got, err := rec.Output.Int64(p.key); err != nil || got != cents {
				return fmt.Sprintf("saga %s paid %d (%v), its amount is %d", id, got, err, cents)
			}
			held[x.Saga] += cents
		}
		for _, step := range x.Completed {
			if r := m.owns(id, x, step); r != "" {
				return r
			}
		}
	}
	for _, c := range []struct {
		role  string
		types []string
	}{{flood.Government, []string{flood.Subsidy, flood.Elevation}}, {flood.Insurer, []string{flood.Insurance}}} {
		for _, typ := range c.types {
			if got := ls[c.role].Spent[typ]; got != held[typ] {
				return fmt.Sprintf("%s ledger spent %d on %s, its sagas hold %d", c.role, got, typ, held[typ])
			}
		}
	}
	// The snapshot holds: keep it, and settle the sagas that ended.
	for _, id := range ids {
		x := xs[id]
		m.seen[id] = x
		if !x.Status.Terminal() {
			continue
		}
		if r := m.household(id, x); r != "" {
			return r
		}
		m.settled[id] = true
		if paid[id] != nil {
			_, cents, _ := flood.Amount(&x)
			m.held[x.Saga] += cents
		}
	}
	return ""
}

// owns returns why step's result in saga x is not its owning role's
// record, "" when it is.
func (m *midway) owns(id string, x saga.Execution, step string) string {
	if m.owned[id+"/"+step] {
		return ""
	}
	for _, d := range flood.Definitions() {
		if d.Subject != x.Saga {
			continue
		}
		st, _ := d.Step(step)
		rec, _, err := m.stores[st.Role].Branch(context.Background(), id, step)
		require.NoError(m.s.t, err)
		switch {
		case !rec.Execute.Done() || rec.Execute.Outcome != messages.OK:
			return fmt.Sprintf("saga %s: step %s completed with no record of %s", id, step, st.Role)
		case fmt.Sprint(rec.Execute.Output) != fmt.Sprint(x.Results[step]):
			return fmt.Sprintf("saga %s: step %s's output %v is not %s's %v", id, step, x.Results[step], st.Role, rec.Execute.Output)
		}
	}
	m.owned[id+"/"+step] = true
	return ""
}

// household returns why the household's record of x, which ended,
// disagrees with how it ended, "" when it agrees.
func (m *midway) household(id string, x saga.Execution) string {
	h, err := x.Context.String(flood.KeyHousehold)
	if err != nil || !messages.ValidToken(h) {
		return ""
	}
	var house flood.House
	_, err = m.stores[flood.Household].Get(context.Background(), flood.HouseKey(h), &house)
	require.NoError(m.s.t, err)
	status, recorded := house.Applications[id]
	switch {
	case x.Status == saga.Completed && (!recorded || status == "cancelled"):
		return fmt.Sprintf("saga %s completed but household %s's application is %q", id, h, status)
	case x.Status != saga.Completed && recorded && status != "cancelled":
		return fmt.Sprintf("saga %s %s but household %s's application is still %q", id, x.Status, h, status)
	}
	return ""
}
