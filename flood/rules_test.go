package flood_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/messages"
)

// call is one command sent to a flood handler through the in-memory
// barrier, and the answer it must get.
type call struct {
	sagaID, step string
	action       messages.Action
	ctx          messages.Context
	verdict      agent.Verdict
	outcome      messages.Outcome
	reason       string           // the exact reason, when outcome is not OK
	out          messages.Context // the exact output, when outcome is OK
}

func ex(sagaID, step string, ctx messages.Context, v agent.Verdict, o messages.Outcome) call {
	return call{sagaID: sagaID, step: step, action: messages.Execute, ctx: ctx, verdict: v, outcome: o}
}

func co(sagaID, step string, ctx messages.Context, v agent.Verdict) call {
	return call{sagaID: sagaID, step: step, action: messages.Compensate, ctx: ctx, verdict: v, outcome: messages.OK}
}

func (c call) because(reason string) call       { c.reason = reason; return c }
func (c call) giving(out messages.Context) call { c.out = out; return c }
func kv(pairs ...any) messages.Context {
	c := messages.Context{}
	for i := 0; i < len(pairs); i += 2 {
		c.MustSet(pairs[i].(string), pairs[i+1])
	}
	return c
}

// runCalls sends calls, in order, to role's handlers of sagaType on m, and
// checks each answer.
func runCalls(t *testing.T, m *agent.Memory, role, sagaType string, calls []call) {
	t.Helper()
	steps, err := flood.Steps(role)
	require.NoError(t, err)
	for i, c := range calls {
		k := slices.IndexFunc(steps, func(s agent.Step) bool { return s.Saga == sagaType && s.Name == c.step })
		require.GreaterOrEqual(t, k, 0, "no handler for %s.%s", sagaType, c.step)
		cmd := &messages.Command{V: messages.Version, SagaID: c.sagaID, Saga: sagaType, Step: c.step,
			Action: c.action, Attempt: 1, Seq: i + 1, Context: c.ctx}
		reply, v, err := m.Do(t.Context(), cmd, steps[k].Handler)
		require.NoError(t, err, "call %d", i)
		require.Equal(t, c.verdict, v, "call %d (%s %s): %s", i, c.action, c.step, reply.Reason)
		require.Equal(t, c.outcome, reply.Outcome, "call %d (%s %s): %s", i, c.action, c.step, reply.Reason)
		if c.outcome == messages.OK {
			if c.action == messages.Execute && c.verdict != agent.Refused {
				require.Equal(t, c.out, reply.Output, "call %d output", i)
			}
		} else {
			require.Equal(t, c.reason, reply.Reason, "call %d reason", i)
		}
	}
}

func ledgerOf(t *testing.T, m *agent.Memory) flood.Ledger {
	t.Helper()
	var l flood.Ledger
	ok, err := m.Value(flood.LedgerKey, &l)
	require.NoError(t, err)
	require.True(t, ok)
	return l
}

func TestLedgerRules(t *testing.T) {
	const (
		sub  = flood.DefaultSubsidyCost
		elev = flood.DefaultElevationCost
	)
	approved := kv(flood.KeyApproved, true)
	for _, tc := range []struct {
		name    string
		role    string
		saga    string
		initial int64
		calls   []call
		balance int64
		spent   map[string]int64
	}{
		{"evaluation approves within the budget", flood.Government, flood.Subsidy, sub, []call{
			ex("s1", "government_evaluates", kv(), agent.Applied, messages.OK).giving(approved),
		}, sub, map[string]int64{}},
		{"evaluation rejects beyond the budget", flood.Government, flood.Subsidy, sub - 1, []call{
			ex("s1", "government_evaluates", kv(), agent.Applied, messages.Failed).
				because("budget insufficient: 499999 cents left, subsidy costs 500000"),
		}, sub - 1, map[string]int64{}},
		{"evaluation reads the context's cost", flood.Government, flood.Subsidy, 100, []call{
			ex("s1", "government_evaluates", kv(flood.KeySubsidyCost, 100), agent.Applied, messages.OK).giving(approved),
			ex("s2", "government_evaluates", kv(flood.KeySubsidyCost, 101), agent.Applied, messages.Failed).
				because("budget insufficient: 100 cents left, subsidy costs 101"),
		}, 100, map[string]int64{}},
		{"a negative cost is rejected", flood.Government, flood.Subsidy, sub, []call{
			ex("s1", "government_evaluates", kv(flood.KeySubsidyCost, -5), agent.Applied, messages.Failed).
				because("bad subsidy_cost: negative amount -5"),
		}, sub, map[string]int64{}},
		{"a deduction pays the subsidy once", flood.Government, flood.Subsidy, 3 * sub, []call{
			ex("s1", "budget_deducted", approved, agent.Applied, messages.OK).giving(kv(flood.KeySubsidyPaid, sub)),
			ex("s1", "budget_deducted", approved, agent.Duplicate, messages.OK).giving(kv(flood.KeySubsidyPaid, sub)),
		}, 2 * sub, map[string]int64{flood.Subsidy: sub}},
		{"a deduction needs an approval", flood.Government, flood.Subsidy, sub, []call{
			ex("s1", "budget_deducted", kv(), agent.Applied, messages.Failed).because("subsidy not approved"),
			ex("s2", "budget_deducted", kv(flood.KeyApproved, false), agent.Applied, messages.Failed).because("subsidy not approved"),
		}, sub, map[string]int64{}},
		{"a deduction beyond the budget is rejected and takes nothing", flood.Government, flood.Subsidy, sub + 7, []call{
			ex("s1", "budget_deducted", approved, agent.Applied, messages.OK).giving(kv(flood.KeySubsidyPaid, sub)),
			ex("s2", "budget_deducted", approved, agent.Applied, messages.Failed).
				because("budget insufficient: 7 cents left, 500000 needed"),
			co("s2", "budget_deducted", approved, agent.Noop),
		}, 7, map[string]int64{flood.Subsidy: sub}},
		{"a refund restores the budget once", flood.Government, flood.Subsidy, sub, []call{
			ex("s1", "budget_deducted", approved, agent.Applied, messages.OK).giving(kv(flood.KeySubsidyPaid, sub)),
			co("s1", "budget_deducted", approved, agent.Applied),
			co("s1", "budget_deducted", approved, agent.Duplicate),
			ex("s1", "budget_deducted", approved, agent.Refused, messages.Failed).because(agent.RefusalReason),
		}, sub, map[string]int64{flood.Subsidy: 0}},
		{"a refund before its deduction is a no-op and bars it", flood.Government, flood.Subsidy, sub, []call{
			co("s1", "budget_deducted", approved, agent.Noop),
			ex("s1", "budget_deducted", approved, agent.Refused, messages.Failed).because(agent.RefusalReason),
		}, sub, map[string]int64{}},
		{"an elevation grant pays its cost and is refunded", flood.Government, flood.Elevation, 2 * elev, []call{
			ex("e1", "government_approves", kv(), agent.Applied, messages.OK).giving(kv(flood.KeyGrant, elev)),
			ex("e2", "government_approves", kv(flood.KeyElevationCost, 300), agent.Applied, messages.OK).giving(kv(flood.KeyGrant, 300)),
			co("e1", "government_approves", kv(), agent.Applied),
		}, 2*elev - 300, map[string]int64{flood.Elevation: 300}},
		{"an elevation grant beyond the budget is rejected", flood.Government, flood.Elevation, elev - 1, []call{
			ex("e1", "government_approves", kv(), agent.Applied, messages.Failed).
				because("budget insufficient for elevation: 999999 cents left, 1000000 needed"),
		}, elev - 1, map[string]int64{}},
		{"a payout is paid from the fund and refunded", flood.Insurer, flood.Insurance, 1000, []call{
			ex("c1", "payout_issued", kv(flood.KeyPayout, 600), agent.Applied, messages.OK).giving(kv(flood.KeyPayoutReceived, 600)),
			ex("c2", "payout_issued", kv(flood.KeyPayout, 300), agent.Applied, messages.OK).giving(kv(flood.KeyPayoutReceived, 300)),
			ex("c3", "payout_issued", kv(flood.KeyPayout, 200), agent.Applied, messages.Failed).
				because("insurer fund exhausted: 100 cents left, 200 needed"),
			co("c1", "payout_issued", kv(flood.KeyPayout, 600), agent.Applied),
		}, 700, map[string]int64{flood.Insurance: 300}},
		{"a payout needs an approved amount", flood.Insurer, flood.Insurance, 1000, []call{
			ex("c1", "payout_issued", kv(), agent.Applied, messages.Failed).because("no approved payout"),
			ex("c2", "payout_issued", kv(flood.KeyPayout, -1), agent.Applied, messages.Failed).because("no approved payout"),
		}, 1000, map[string]int64{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := agent.NewMemory()
			require.NoError(t, flood.InitLedger(tc.initial)(t.Context(), m))
			runCalls(t, m, tc.role, tc.saga, tc.calls)
			l := ledgerOf(t, m)
			require.Equal(t, tc.initial, l.Initial)
			require.Equal(t, tc.balance, l.Balance)
			require.Equal(t, tc.spent, l.Spent)
			require.Equal(t, l.Initial-l.Balance, l.SpentTotal())
		})
	}
}

func TestInitLedgerKeepsAnOpenLedger(t *testing.T) {
	m := agent.NewMemory()
	require.NoError(t, flood.InitLedger(100)(t.Context(), m))
	runCalls(t, m, flood.Government, flood.Elevation, []call{
		ex("e1", "government_approves", kv(flood.KeyElevationCost, 40), agent.Applied, messages.OK).giving(kv(flood.KeyGrant, 40)),
	})
	require.NoError(t, flood.InitLedger(5000)(t.Context(), m))
	require.Equal(t, flood.Ledger{Initial: 100, Balance: 60, Spent: map[string]int64{flood.Elevation: 40}}, ledgerOf(t, m))
}

func TestClaimRules(t *testing.T) {
	ded := flood.DefaultDeductible
	for _, tc := range []struct {
		name string
		ctx  messages.Context
		want call
	}{
		{"payout is damage less the default deductible", kv(flood.KeyDamage, ded+250),
			call{outcome: messages.OK, out: kv(flood.KeyPayout, 250, flood.KeyApproved, true)}},
		{"the context's deductible applies", kv(flood.KeyDamage, 900, flood.KeyDeductible, 100),
			call{outcome: messages.OK, out: kv(flood.KeyPayout, 800, flood.KeyApproved, true)}},
		{"damage at the deductible is rejected", kv(flood.KeyDamage, ded),
			call{outcome: messages.Failed, reason: "damage 100000 at or below the deductible 100000"}},
		{"damage below the deductible is rejected", kv(flood.KeyDamage, 10, flood.KeyDeductible, 20),
			call{outcome: messages.Failed, reason: "damage 10 at or below the deductible 20"}},
		{"no damage is rejected", kv(),
			call{outcome: messages.Failed, reason: "damage 0 at or below the deductible 100000"}},
		{"coverage caps the payout", kv(flood.KeyDamage, 900, flood.KeyDeductible, 100, flood.KeyCoverage, 500),
			call{outcome: messages.OK, out: kv(flood.KeyPayout, 500, flood.KeyApproved, true)}},
		{"coverage above the payout does not raise it", kv(flood.KeyDamage, 900, flood.KeyDeductible, 100, flood.KeyCoverage, 5000),
			call{outcome: messages.OK, out: kv(flood.KeyPayout, 800, flood.KeyApproved, true)}},
		{"zero coverage pays nothing", kv(flood.KeyDamage, 900, flood.KeyDeductible, 100, flood.KeyCoverage, 0),
			call{outcome: messages.OK, out: kv(flood.KeyPayout, 0, flood.KeyApproved, true)}},
		{"a negative damage is rejected", kv(flood.KeyDamage, -1),
			call{outcome: messages.Failed, reason: "bad damage: negative amount -1"}},
		{"a malformed coverage is rejected", kv(flood.KeyDamage, 900, flood.KeyDeductible, 100, flood.KeyCoverage, "lots"),
			call{outcome: messages.Failed, reason: `bad coverage: context key "coverage": json: cannot unmarshal string into Go value of type int64`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.want
			c.sagaID, c.step, c.action, c.ctx, c.verdict = "c1", "insurer_evaluates", messages.Execute, tc.ctx, agent.Applied
			m := agent.NewMemory()
			runCalls(t, m, flood.Insurer, flood.Insurance, []call{c, co("c1", "insurer_evaluates", tc.ctx, map[bool]agent.Verdict{true: agent.Applied, false: agent.Noop}[c.outcome == messages.OK])})
		})
	}
}

func TestHouseRules(t *testing.T) {
	h1 := kv(flood.KeyHousehold, "h1")
	house := func(t *testing.T, m *agent.Memory) flood.House {
		t.Helper()
		var h flood.House
		ok, err := m.Value(flood.HouseKey("h1"), &h)
		require.NoError(t, err)
		require.True(t, ok)
		return h
	}
	t.Run("household steps record and cancel the application", func(t *testing.T) {
		for _, s := range []struct{ saga, step, status string }{
			{flood.Subsidy, "household_applies", "pending"},
			{flood.Insurance, "household_files", "filed"},
			{flood.Elevation, "household_requests", "requested"},
		} {
			m := agent.NewMemory()
			runCalls(t, m, flood.Household, s.saga, []call{
				ex("a1", s.step, h1, agent.Applied, messages.OK).giving(kv(flood.KeyStatus, s.status)),
				ex("a2", s.step, h1, agent.Applied, messages.OK).giving(kv(flood.KeyStatus, s.status)),
			})
			require.Equal(t, flood.House{Applications: map[string]string{"a1": s.status, "a2": s.status}}, house(t, m))
			runCalls(t, m, flood.Household, s.saga, []call{co("a1", s.step, h1, agent.Applied)})
			require.Equal(t, flood.House{Applications: map[string]string{"a1": "cancelled", "a2": s.status}}, house(t, m))
		}
	})
	t.Run("a household keeps at most MaxApplications, and room to cancel each", func(t *testing.T) {
		m := agent.NewMemory()
		id := func(i int) string { return fmt.Sprintf("%064d", i) } // the longest saga id
		var calls, undo []call
		for i := range flood.MaxApplications {
			calls = append(calls, ex(id(i), "household_requests", h1, agent.Applied, messages.OK).giving(kv(flood.KeyStatus, "requested")))
			undo = append(undo, co(id(i), "household_requests", h1, agent.Applied))
		}
		calls = append(calls, ex(id(flood.MaxApplications), "household_requests", h1, agent.Applied, messages.Failed).
			because(fmt.Sprintf("household h1 keeps %d applications, the most it may", flood.MaxApplications)))
		runCalls(t, m, flood.Household, flood.Elevation, append(calls, undo...))
		h := house(t, m)
		require.Len(t, h.Applications, flood.MaxApplications)
		for _, status := range h.Applications {
			require.Equal(t, "cancelled", status)
		}
		data, err := json.Marshal(h)
		require.NoError(t, err)
		require.LessOrEqual(t, len(data), messages.MaxValueFor(64<<10), "within what a 64 KiB server stores")
	})
	t.Run("a household id must be a token", func(t *testing.T) {
		m := agent.NewMemory()
		runCalls(t, m, flood.Household, flood.Subsidy, []call{
			ex("a1", "household_applies", kv(flood.KeyHousehold, "h.1"), agent.Applied, messages.Failed).because(`bad household_id: "h.1"`),
			ex("a2", "household_applies", kv(), agent.Applied, messages.Failed).because(`bad household_id: context key "household_id": missing key`),
			ex("a3", "household_applies", kv(flood.KeyHousehold, 123), agent.Applied, messages.Failed).
				because(`bad household_id: context key "household_id": json: cannot unmarshal number into Go value of type string`),
		})
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{
			ex("e0", "contractor_elevates", kv(flood.KeyHousehold, nil), agent.Applied, messages.Failed).
				because(`bad household_id: ""`), // null decodes as ""
		})
	})
	t.Run("the contractor elevates and undoes it", func(t *testing.T) {
		m := agent.NewMemory()
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{
			ex("e1", "contractor_elevates", h1, agent.Applied, messages.OK).giving(kv(flood.KeyElevated, true)),
		})
		require.True(t, house(t, m).Elevated)
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{co("e1", "contractor_elevates", h1, agent.Applied)})
		require.False(t, house(t, m).Elevated)
	})
	t.Run("only the saga that elevated a house lowers it", func(t *testing.T) {
		m := agent.NewMemory()
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{
			ex("e1", "contractor_elevates", h1, agent.Applied, messages.OK).giving(kv(flood.KeyElevated, true)),
			// A second elevation of the house changes nothing, and its
			// compensation (the saga timed out while its contractor
			// worked) leaves the first one's elevation.
			ex("e2", "contractor_elevates", h1, agent.Applied, messages.OK).giving(kv(flood.KeyElevated, true)),
			co("e2", "contractor_elevates", h1, agent.Applied),
		})
		require.Equal(t, flood.House{Elevated: true, ElevatedBy: "e1"}, house(t, m))
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{co("e1", "contractor_elevates", h1, agent.Applied)})
		require.Equal(t, flood.House{}, house(t, m))
		// A house an earlier agent elevated names no saga: any
		// elevation's compensation lowers it, as it did then.
		m = agent.NewMemory()
		_, err := m.Init(t.Context(), flood.HouseKey("h1"), flood.House{Elevated: true})
		require.NoError(t, err)
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{
			ex("e3", "contractor_elevates", h1, agent.Applied, messages.OK).giving(kv(flood.KeyElevated, true)),
			co("e3", "contractor_elevates", h1, agent.Applied),
		})
		require.Equal(t, flood.House{}, house(t, m))
	})
	t.Run("the contractor refuses an unsuitable site", func(t *testing.T) {
		m := agent.NewMemory()
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{
			ex("e1", "contractor_elevates", kv(flood.KeyHousehold, "h1", flood.KeySite, "unsuitable"), agent.Applied, messages.Failed).
				because("contractor: site unsuitable for elevation"),
		})
		ok, err := m.Value(flood.HouseKey("h1"), new(flood.House))
		require.NoError(t, err)
		require.False(t, ok, "a refused elevation writes nothing")
	})
	t.Run("the contractor's duration is the context's ticks", func(t *testing.T) {
		steps, err := flood.Steps(flood.Contractor)
		require.NoError(t, err)
		require.Equal(t, int64(3), steps[0].Duration(&messages.Command{Context: kv(flood.KeyContractorTicks, 3)}))
		require.Equal(t, int64(flood.MaxContractorTicks), steps[0].Duration(&messages.Command{Context: kv(flood.KeyContractorTicks, flood.MaxContractorTicks)}))
		require.Zero(t, steps[0].Duration(&messages.Command{Context: kv()}))
		// Out of range, it holds nothing: the step refuses at once.
		require.Zero(t, steps[0].Duration(&messages.Command{Context: kv(flood.KeyContractorTicks, 1_000_000)}))
		require.Zero(t, steps[0].Duration(&messages.Command{Context: kv(flood.KeyContractorTicks, -1)}))
	})
	t.Run("the contractor refuses ticks out of range", func(t *testing.T) {
		m := agent.NewMemory()
		runCalls(t, m, flood.Contractor, flood.Elevation, []call{
			ex("e1", "contractor_elevates", kv(flood.KeyHousehold, "h1", flood.KeyContractorTicks, 1_000_000), agent.Applied, messages.Failed).
				because("contractor: contractor_ticks 1000000: want an integer from 0 to 100"),
			ex("e2", "contractor_elevates", kv(flood.KeyHousehold, "h1", flood.KeyContractorTicks, "soon"), agent.Applied, messages.Failed).
				because(`contractor: contractor_ticks "soon": want an integer from 0 to 100`),
		})
	})
}

// TestEveryStepHasItsHandler checks that each step of each definition has a
// handler among the steps of its role, and each handler a step.
func TestEveryStepHasItsHandler(t *testing.T) {
	type key struct{ role, saga, step string }
	want := map[key]bool{}
	for _, d := range flood.Definitions() {
		for _, s := range d.Steps {
			want[key{s.Role, d.Subject, s.Name}] = true
		}
	}
	got := map[key]bool{}
	for _, role := range []string{flood.Household, flood.Government, flood.Insurer, flood.Contractor} {
		steps, err := flood.Steps(role)
		require.NoError(t, err)
		for _, s := range steps {
			require.NotNil(t, s.Handler.Execute, "%s %s.%s", role, s.Saga, s.Name)
			require.NotNil(t, s.Handler.Compensate, "%s %s.%s", role, s.Saga, s.Name)
			require.False(t, got[key{role, s.Saga, s.Name}], "%s %s.%s twice", role, s.Saga, s.Name)
			got[key{role, s.Saga, s.Name}] = true
		}
	}
	require.Equal(t, want, got)
	_, err := flood.Steps("plumber")
	require.Error(t, err)
}
