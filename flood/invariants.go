package flood

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Outcome is how one saga of a simulation ended, finer than its status: a
// rollback is told apart by the business failure that caused it.
type Outcome string

// The outcomes.
const (
	OutcomeCompleted Outcome = "completed"
	// OutcomeBudget: the government's budget could not pay a subsidy or
	// an elevation grant.
	OutcomeBudget Outcome = "rolled_back_budget"
	// OutcomeDeductible: the insurer rejected a claim at or below its
	// deductible.
	OutcomeDeductible Outcome = "rolled_back_deductible"
	// OutcomeFund: the insurer's fund could not pay a payout.
	OutcomeFund Outcome = "rolled_back_fund"
	// OutcomeContractor: the contractor refused the site.
	OutcomeContractor Outcome = "rolled_back_contractor"
	// OutcomeRolledBackOther: any other rollback, such as a transient
	// error that outlasted its retries.
	OutcomeRolledBackOther Outcome = "rolled_back_other"
	OutcomeTimedOut        Outcome = "timed_out"
	OutcomeFailed          Outcome = "failed"
	// OutcomeUnfinished: the saga had not ended, or was not found.
	OutcomeUnfinished Outcome = "unfinished"
)

// RequiredOutcomes returns the outcomes the default scenario is built to
// show: completions, a rollback from each business failure the scenario
// plans (budget exhausted, damage at or below the deductible, an unsuitable
// site) and timeouts (a slow contractor).
func RequiredOutcomes() []Outcome {
	return []Outcome{OutcomeCompleted, OutcomeBudget, OutcomeDeductible, OutcomeContractor, OutcomeTimedOut}
}

// MissingOutcomes returns the required outcomes that counts has none of, in
// the order of [RequiredOutcomes].
func MissingOutcomes(counts map[Outcome]int) []Outcome {
	var missing []Outcome
	for _, o := range RequiredOutcomes() {
		if counts[o] == 0 {
			missing = append(missing, o)
		}
	}
	return missing
}

// businessFailure returns the outcome of a business failure of step of
// sagaType.
func businessFailure(sagaType, step string) Outcome {
	switch sagaType + "." + step {
	case Subsidy + ".government_evaluates", Subsidy + ".budget_deducted", Elevation + ".government_approves":
		return OutcomeBudget
	case Insurance + ".insurer_evaluates":
		return OutcomeDeductible
	case Insurance + ".payout_issued":
		return OutcomeFund
	case Elevation + ".contractor_elevates":
		return OutcomeContractor
	}
	return OutcomeRolledBackOther
}

// Classify returns how x ended. A rollback is a business failure of the
// step after the completed ones when that step was not compensated itself
// (the engine compensates the step in flight only after a timeout, a
// transient error or an abort); it is then classified by that step.
func Classify(x *saga.Execution) Outcome {
	switch x.Status {
	case saga.Completed:
		return OutcomeCompleted
	case saga.TimedOut:
		return OutcomeTimedOut
	case saga.Failed:
		return OutcomeFailed
	case saga.RolledBack:
	default:
		return OutcomeUnfinished
	}
	def := definition(x.Saga)
	if def == nil || len(x.Completed) >= len(def.Steps) {
		return OutcomeRolledBackOther
	}
	failed := def.Steps[len(x.Completed)].Name
	if slices.Contains(x.Compensated, failed) {
		return OutcomeRolledBackOther
	}
	return businessFailure(x.Saga, failed)
}

// HouseholdFull reports whether x rolled back because its household
// already kept [MaxApplications] applications: the model has run many
// times on one server (a run makes about seven a household in 100
// ticks), and its outcomes are no longer the scenario's.
func HouseholdFull(x *saga.Execution) bool {
	return x.Status == saga.RolledBack && strings.Contains(x.Error, fullReason)
}

// definition returns the flood saga of subject, nil for another. Classify
// asks it of every saga that rolled back, so the file is read once: read
// for each, the report of a 30,000-household run (57,727 sagas) spent about
// 0.9 s classifying them and 0.7 s drawing its timeline, against 63 and
// 47 ms now.
func definition(subject string) *saga.Definition {
	defs := parsedDefinitions()
	for i := range defs {
		if defs[i].Subject == subject {
			return &defs[i]
		}
	}
	return nil
}

// parsedDefinitions is [Definitions], read once, for this package alone:
// it must not be changed.
var parsedDefinitions = sync.OnceValue(Definitions)

// Amount returns the money a completed saga x moved out of a ledger: the
// role whose ledger paid, and the amount in cents (the context's
// subsidy_cost, payout or elevation_cost, with the agents' defaults). It
// returns an error for an unknown saga type or a malformed amount.
func Amount(x *saga.Execution) (role string, cents int64, err error) {
	get := func(key string, def int64) (int64, error) {
		v, err := x.Context.Int64(key)
		if errors.Is(err, messages.ErrMissingKey) && def >= 0 {
			return def, nil
		}
		return v, err
	}
	switch x.Saga {
	case Subsidy:
		cents, err = get(KeySubsidyCost, DefaultSubsidyCost)
		role = Government
	case Elevation:
		cents, err = get(KeyElevationCost, DefaultElevationCost)
		role = Government
	case Insurance:
		cents, err = get(KeyPayout, -1)
		role = Insurer
	default:
		return "", 0, fmt.Errorf("saga %s: unknown saga type %q", x.ID, x.Saga)
	}
	if err != nil {
		return "", 0, fmt.Errorf("saga %s amount: %w", x.ID, err)
	}
	return role, cents, nil
}

// LedgerChange is a ledger read before and after a run.
type LedgerChange struct {
	Before Ledger `json:"before"`
	After  Ledger `json:"after"`
}

// Spent returns how much the run spent for sagaType.
func (c LedgerChange) Spent(sagaType string) int64 {
	return c.After.Spent[sagaType] - c.Before.Spent[sagaType]
}

// Houses are the household records of one role's store, by household id.
type Houses map[string]House

// Observation is what a simulation saw of one run, for [CheckInvariants].
type Observation struct {
	// Started maps the id of every saga the run started to its saga type.
	Started map[string]string
	// Final holds the final state of the sagas, by id. A started saga
	// that is missing was lost.
	Final map[string]saga.Execution
	// Government and Insurer are the ledgers before and after the run.
	Government, Insurer LedgerChange
	// Households holds the household agents' records after the run;
	// nil skips the checks on them.
	Households Houses
	// ContractorBefore and ContractorAfter hold the contractor's records
	// before and after the run; nil skips the checks on them.
	ContractorBefore, ContractorAfter Houses
}

// CheckInvariants returns every violation of the simulation's invariants
// in o, sorted; none means the run was correct:
//
//   - every started saga was found and is terminal, and none failed;
//   - each ledger's balance is not negative and its opening amount less
//     its balance is what it spent;
//   - what each ledger spent in the run, per saga type, is the sum of the
//     amounts of the completed sagas of that type (see [Amount]): a
//     rolled-back or timed-out saga leaves no money behind;
//   - with the households' records, a completed saga's application is
//     recorded and not cancelled, and any other saga's is absent or
//     cancelled;
//   - with the contractor's records, a house is elevated after the run
//     when it was before or a saga of the run elevated it, and only then.
func CheckInvariants(o Observation) []string {
	var v []string
	bad := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	spent := map[string]int64{} // by saga type, over completed sagas
	elevated := map[string]bool{}
	// The sagas are read in the map's order: what comes of them (sums, a
	// set, violations sorted at the end) does not depend on it.
	for id, typ := range o.Started {
		x, ok := o.Final[id]
		switch {
		case !ok:
			bad("saga %s (%s) lost: no final state", id, typ)
			continue
		case x.Saga != typ:
			bad("saga %s: started as %s, found as %s", id, typ, x.Saga)
		case !x.Status.Terminal():
			bad("saga %s (%s) not terminal: %s", id, typ, x.Status)
			continue
		case x.Status == saga.Failed:
			bad("saga %s (%s) failed: %s", id, typ, x.Error)
		}
		household, _ := x.Context.String(KeyHousehold)
		if x.Status == saga.Completed {
			_, cents, err := Amount(&x)
			if err != nil {
				bad("%v", err)
			}
			spent[x.Saga] += cents
			if x.Saga == Elevation {
				elevated[household] = true
			}
		}
		if o.Households != nil {
			status, recorded := o.Households[household].Applications[id]
			switch {
			case x.Status == saga.Completed && (!recorded || status == "cancelled"):
				bad("saga %s (%s) completed but household %s's application is %q", id, typ, household, status)
			case x.Status != saga.Completed && recorded && status != "cancelled":
				bad("saga %s (%s) %s but household %s's application is still %q", id, typ, x.Status, household, status)
			}
		}
	}

	ledger := func(name string, c LedgerChange, types ...string) {
		for _, l := range []struct {
			when string
			l    Ledger
		}{{"before", c.Before}, {"after", c.After}} {
			if l.l.Balance < 0 {
				bad("%s ledger %s the run: negative balance %d", name, l.when, l.l.Balance)
			}
			if d := l.l.Initial - l.l.Balance; d != l.l.SpentTotal() {
				bad("%s ledger %s the run: initial %d - balance %d = %d, but spent adds up to %d",
					name, l.when, l.l.Initial, l.l.Balance, d, l.l.SpentTotal())
			}
		}
		for _, t := range types {
			if got := c.Spent(t); got != spent[t] {
				bad("%s ledger: spent %d on %s in the run, but its completed sagas amount to %d", name, got, t, spent[t])
			}
		}
	}
	ledger(Government, o.Government, Subsidy, Elevation)
	ledger(Insurer, o.Insurer, Insurance)

	if o.ContractorAfter != nil {
		houses := make([]string, 0, len(o.ContractorAfter)+len(elevated))
		for h := range o.ContractorAfter {
			houses = append(houses, h)
		}
		for h := range elevated {
			if _, ok := o.ContractorAfter[h]; !ok {
				houses = append(houses, h)
			}
		}
		sort.Strings(houses)
		for _, h := range houses {
			want := o.ContractorBefore[h].Elevated || elevated[h]
			if got := o.ContractorAfter[h].Elevated; got != want {
				bad("house %s: elevated is %v, want %v", h, got, want)
			}
		}
	}
	sort.Strings(v)
	return v
}
