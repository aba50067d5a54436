package flood_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// execution returns a terminal saga of sagaType for household with status;
// a completed one has every step done, and amount in its context.
func execution(id, sagaType, household string, status saga.Status, amount int64) saga.Execution {
	x := saga.Execution{ID: id, Saga: sagaType, Status: status,
		Context: messages.Context{}.MustSet(flood.KeyHousehold, household)}
	key := map[string]string{flood.Subsidy: flood.KeySubsidyCost, flood.Elevation: flood.KeyElevationCost, flood.Insurance: flood.KeyPayout}[sagaType]
	if status == saga.Completed {
		x.Context.MustSet(key, amount)
	}
	return x
}

func ledger(initial int64, spent map[string]int64) flood.Ledger {
	l := flood.Ledger{Initial: initial, Balance: initial, Spent: map[string]int64{}}
	for k, v := range spent {
		l.Spent[k] = v
		l.Balance -= v
	}
	return l
}

// validObservation is a correct run: one saga of each type completed, one
// subsidy rolled back and one elevation timed out.
func validObservation() flood.Observation {
	final := map[string]saga.Execution{
		"s1": execution("s1", flood.Subsidy, "h1", saga.Completed, 5_000_00),
		"s2": execution("s2", flood.Subsidy, "h2", saga.RolledBack, 0),
		"e1": execution("e1", flood.Elevation, "h1", saga.Completed, 10_000_00),
		"e2": execution("e2", flood.Elevation, "h2", saga.TimedOut, 0),
		"i1": execution("i1", flood.Insurance, "h1", saga.Completed, 1_234_56),
	}
	started := map[string]string{}
	for id, x := range final {
		started[id] = x.Saga
	}
	return flood.Observation{
		Started: started,
		Final:   final,
		Government: flood.LedgerChange{
			Before: ledger(100_000_00, map[string]int64{flood.Subsidy: 5_000_00}),
			After:  ledger(100_000_00, map[string]int64{flood.Subsidy: 10_000_00, flood.Elevation: 10_000_00}),
		},
		Insurer: flood.LedgerChange{
			Before: ledger(50_000_00, nil),
			After:  ledger(50_000_00, map[string]int64{flood.Insurance: 1_234_56}),
		},
		Households: flood.Houses{
			"h1": {Applications: map[string]string{"s1": "pending", "e1": "requested", "i1": "filed"}},
			"h2": {Applications: map[string]string{"s2": "cancelled"}}, // e2's household step never ran
		},
		ContractorBefore: flood.Houses{"h3": {Elevated: true}},
		ContractorAfter:  flood.Houses{"h1": {Elevated: true}, "h2": {}, "h3": {Elevated: true}},
	}
}

func TestCheckInvariants(t *testing.T) {
	tests := []struct {
		name   string
		change func(o *flood.Observation)
		want   []string // substrings, one per violation, in sorted order
	}{
		{name: "valid", change: func(*flood.Observation) {}},
		{name: "lost saga", change: func(o *flood.Observation) { delete(o.Final, "s2") },
			want: []string{"saga s2 (subsidy) lost"}},
		{name: "still active", change: func(o *flood.Observation) {
			x := o.Final["s2"]
			x.Status = saga.Compensating
			o.Final["s2"] = x
		}, want: []string{"saga s2 (subsidy) not terminal: compensating"}},
		{name: "failed", change: func(o *flood.Observation) {
			x := o.Final["s2"]
			x.Status, x.Error = saga.Failed, "compensation of household_applies: error"
			o.Final["s2"] = x
		}, want: []string{"saga s2 (subsidy) failed: compensation of household_applies"}},
		{name: "wrong type", change: func(o *flood.Observation) { o.Started["s2"] = flood.Elevation },
			want: []string{"saga s2: started as elevation, found as subsidy"}},
		{name: "negative balance", change: func(o *flood.Observation) {
			o.Government.After.Balance = -1
			o.Government.After.Initial = o.Government.After.SpentTotal() - 1
		}, want: []string{"government ledger after the run: negative balance -1"}},
		{name: "spent does not add up", change: func(o *flood.Observation) { o.Insurer.After.Balance += 1 },
			want: []string{"insurer ledger after the run: initial 5000000 - balance 4876545 = 123455, but spent adds up to 123456"}},
		{name: "rolled back saga left money spent", change: func(o *flood.Observation) {
			o.Government.After = ledger(100_000_00, map[string]int64{flood.Subsidy: 15_000_00, flood.Elevation: 10_000_00})
		}, want: []string{"government ledger: spent 1000000 on subsidy in the run, but its completed sagas amount to 500000"}},
		{name: "completed payout not spent", change: func(o *flood.Observation) {
			o.Insurer.After = ledger(50_000_00, nil)
		}, want: []string{"insurer ledger: spent 0 on insurance in the run, but its completed sagas amount to 123456"}},
		{name: "elevation grant kept after timeout", change: func(o *flood.Observation) {
			o.Government.After = ledger(100_000_00, map[string]int64{flood.Subsidy: 10_000_00, flood.Elevation: 20_000_00})
		}, want: []string{"spent 2000000 on elevation in the run, but its completed sagas amount to 1000000"}},
		{name: "rolled back application not cancelled", change: func(o *flood.Observation) {
			o.Households["h2"].Applications["s2"] = "pending"
		}, want: []string{`saga s2 (subsidy) rolled_back but household h2's application is still "pending"`}},
		{name: "completed application cancelled", change: func(o *flood.Observation) {
			o.Households["h1"].Applications["i1"] = "cancelled"
		}, want: []string{`saga i1 (insurance) completed but household h1's application is "cancelled"`}},
		{name: "timed out elevation left the house elevated", change: func(o *flood.Observation) {
			o.ContractorAfter["h2"] = flood.House{Elevated: true}
		}, want: []string{"house h2: elevated is true, want false"}},
		{name: "completed elevation not done", change: func(o *flood.Observation) { delete(o.ContractorAfter, "h1") },
			want: []string{"house h1: elevated is false, want true"}},
		{name: "missing payout", change: func(o *flood.Observation) {
			x := o.Final["i1"]
			x.Context = messages.Context{}.MustSet(flood.KeyHousehold, "h1")
			o.Final["i1"] = x
		}, want: []string{"insurer ledger: spent 123456", "saga i1 amount: context key \"payout\": missing key"}},
		{name: "no household records skips their checks", change: func(o *flood.Observation) {
			o.Households, o.ContractorBefore, o.ContractorAfter = nil, nil, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := validObservation()
			tt.change(&o)
			got := flood.CheckInvariants(o)
			require.Len(t, got, len(tt.want), "%q", got)
			for i, w := range tt.want {
				require.True(t, strings.Contains(got[i], w), "violation %d: %q does not contain %q", i, got[i], w)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		x    saga.Execution
		want flood.Outcome
	}{
		{"completed", saga.Execution{Saga: flood.Subsidy, Status: saga.Completed}, flood.OutcomeCompleted},
		{"timed out", saga.Execution{Saga: flood.Elevation, Status: saga.TimedOut}, flood.OutcomeTimedOut},
		{"failed", saga.Execution{Saga: flood.Elevation, Status: saga.Failed}, flood.OutcomeFailed},
		{"active", saga.Execution{Saga: flood.Elevation, Status: saga.InProgress}, flood.OutcomeUnfinished},
		{"budget at evaluation", saga.Execution{Saga: flood.Subsidy, Status: saga.RolledBack,
			Completed: []string{"household_applies"}, Compensated: []string{"household_applies"}}, flood.OutcomeBudget},
		{"budget at deduction", saga.Execution{Saga: flood.Subsidy, Status: saga.RolledBack,
			Completed: []string{"household_applies", "government_evaluates"}}, flood.OutcomeBudget},
		{"budget for elevation", saga.Execution{Saga: flood.Elevation, Status: saga.RolledBack,
			Completed: []string{"household_requests"}}, flood.OutcomeBudget},
		{"deductible", saga.Execution{Saga: flood.Insurance, Status: saga.RolledBack,
			Completed: []string{"household_files"}}, flood.OutcomeDeductible},
		{"fund", saga.Execution{Saga: flood.Insurance, Status: saga.RolledBack,
			Completed: []string{"household_files", "insurer_evaluates"}}, flood.OutcomeFund},
		{"contractor", saga.Execution{Saga: flood.Elevation, Status: saga.RolledBack,
			Completed: []string{"household_requests", "government_approves"}}, flood.OutcomeContractor},
		{"transient error compensates the failing step too", saga.Execution{Saga: flood.Elevation, Status: saga.RolledBack,
			Completed:   []string{"household_requests", "government_approves"},
			Compensated: []string{"contractor_elevates", "government_approves", "household_requests"}}, flood.OutcomeRolledBackOther},
		{"household step rejected", saga.Execution{Saga: flood.Subsidy, Status: saga.RolledBack}, flood.OutcomeRolledBackOther},
		{"unknown saga type", saga.Execution{Saga: "other", Status: saga.RolledBack}, flood.OutcomeRolledBackOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, flood.Classify(&tt.x))
		})
	}
}

func TestMissingOutcomes(t *testing.T) {
	all := map[flood.Outcome]int{}
	for _, o := range flood.RequiredOutcomes() {
		all[o] = 1
	}
	require.Empty(t, flood.MissingOutcomes(all))
	delete(all, flood.OutcomeTimedOut)
	all[flood.OutcomeDeductible] = 0
	require.Equal(t, []flood.Outcome{flood.OutcomeDeductible, flood.OutcomeTimedOut}, flood.MissingOutcomes(all))
}

func TestAmount(t *testing.T) {
	x := saga.Execution{ID: "x", Saga: flood.Subsidy, Context: messages.Context{}}
	role, cents, err := flood.Amount(&x)
	require.NoError(t, err)
	require.Equal(t, flood.Government, role)
	require.Equal(t, flood.DefaultSubsidyCost, cents, "the agents' default applies")

	x = saga.Execution{ID: "x", Saga: flood.Elevation, Context: messages.Context{}.MustSet(flood.KeyElevationCost, 12_000_00)}
	role, cents, err = flood.Amount(&x)
	require.NoError(t, err)
	require.Equal(t, flood.Government, role)
	require.Equal(t, int64(12_000_00), cents)

	x = saga.Execution{ID: "x", Saga: flood.Insurance, Context: messages.Context{}.MustSet(flood.KeyPayout, "lots")}
	_, _, err = flood.Amount(&x)
	require.Error(t, err)

	x = saga.Execution{ID: "x", Saga: "other"}
	_, _, err = flood.Amount(&x)
	require.ErrorContains(t, err, "unknown saga type")
}

// TestHouseholdFull tells the rollbacks of households at their most
// applications (the reason rules_test pins) from the rest.
func TestHouseholdFull(t *testing.T) {
	full := fmt.Sprintf("household_requests: household h1 keeps %d applications, the most it may", flood.MaxApplications)
	for _, tc := range []struct {
		x    saga.Execution
		want bool
	}{
		{saga.Execution{Status: saga.RolledBack, Error: full}, true},
		{saga.Execution{Status: saga.TimedOut, Error: full}, false},
		{saga.Execution{Status: saga.RolledBack, Error: "government_evaluates: budget exhausted"}, false},
		{saga.Execution{Status: saga.Completed}, false},
	} {
		require.Equal(t, tc.want, flood.HouseholdFull(&tc.x), "%+v", tc.x)
	}
}
