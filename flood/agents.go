package flood

import (
	"context"
	"errors"
	"fmt"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/messages"
)

// LedgerKey is the state key of the government's budget and of the
// insurer's fund.
const LedgerKey = "ledger"

// HouseKey is the state key under which the household agents, and the
// contractor, keep what they know of household id.
func HouseKey(id string) string { return "house." + id }

// Ledger is an amount of money held by one role, shared by every saga.
type Ledger struct {
	// Initial is the amount the ledger was opened with, in cents.
	Initial int64 `json:"initial"`
	// Balance is what is left. It is never negative.
	Balance int64 `json:"balance"`
	// Spent is what was paid out, per saga type. Initial - Balance equals
	// the sum of Spent.
	Spent map[string]int64 `json:"spent"`
}

// SpentTotal is the sum of Spent.
func (l Ledger) SpentTotal() int64 {
	var s int64
	for _, v := range l.Spent {
		s += v
	}
	return s
}

// House is what the household agents keep about one household.
type House struct {
	// Applications maps a saga id to the status of the household's
	// application, claim or request in it.
	Applications map[string]string `json:"applications"`
	Elevated     bool              `json:"elevated,omitempty"`
	// ElevatedBy is the saga whose contractor step elevated the house: only
	// its compensation lowers it again. Empty for a house elevated by an
	// agent before this field, whose every elevation's compensation
	// lowers it.
	ElevatedBy string `json:"elevated_by,omitempty"`
}

// InitLedger returns an agent Init that opens the ledger with initial cents
// the first time the role's store is used, and leaves it as it is after.
func InitLedger(initial int64) func(ctx context.Context, s agent.Seeder) error {
	return func(ctx context.Context, s agent.Seeder) error {
		_, err := s.Init(ctx, LedgerKey, Ledger{Initial: initial, Balance: initial, Spent: map[string]int64{}})
		return err
	}
}

// Serial reports whether role's state is one key that every saga of the
// role touches: the government's budget and the insurer's fund. Such a
// role runs its commands one at a time, in the order the coordinator
// released them (participant.Options.Serial), so that contested budgets
// are spent in rank order in a simulation run.
func Serial(role string) bool { return role == Government || role == Insurer }

// Steps returns the steps role serves, or an error for an unknown role.
func Steps(role string) ([]agent.Step, error) {
	switch role {
	case Household:
		return HouseholdSteps(), nil
	case Government:
		return GovernmentSteps(), nil
	case Insurer:
		return InsurerSteps(), nil
	case Contractor:
		return ContractorSteps(), nil
	}
	return nil, fmt.Errorf("unknown flood role %q (want %s, %s, %s or %s)", role, Household, Government, Insurer, Contractor)
}

// amount reads a non-negative amount in cents from the context, def when
// absent. A malformed amount is a business rejection: retrying cannot fix it.
func amount(c messages.Context, key string, def int64) (int64, error) {
	v, err := c.Int64(key)
	switch {
	case errors.Is(err, messages.ErrMissingKey):
		return def, nil
	case err != nil:
		return 0, agent.Reject("bad %s: %v", key, err)
	case v < 0:
		return 0, agent.Reject("bad %s: negative amount %d", key, v)
	}
	return v, nil
}

// HouseholdSteps are the household's steps: applying, filing and
// requesting, each recorded on the household and cancelled by its
// compensation.
func HouseholdSteps() []agent.Step {
	mark := func(status string) func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
		return func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			if err := setApplication(tx, cmd, status); err != nil {
				return nil, err
			}
			return messages.Context{}.MustSet(KeyStatus, status), nil
		}
	}
	cancel := func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
		return setApplication(tx, cmd, "cancelled")
	}
	return []agent.Step{
		{Saga: Subsidy, Name: "household_applies", Handler: agent.Handler{Execute: mark("pending"), Compensate: cancel}},
		{Saga: Insurance, Name: "household_files", Handler: agent.Handler{Execute: mark("filed"), Compensate: cancel}},
		{Saga: Elevation, Name: "household_requests", Handler: agent.Handler{Execute: mark("requested"), Compensate: cancel}},
	}
}

// MaxApplications bounds the applications a household keeps: an execute
// that would add one more is rejected. A compensation only changes the
// status of one kept, so a household's record, at most about 21 KB with
// the longest saga ids, always has room for every compensation of its
// sagas, under any server payload limit natsaga takes (64 KiB and more).
// A run makes a few applications a household (about seven in 100 ticks).
const MaxApplications = 256

// fullReason ends the reason a household gives for an application beyond
// [MaxApplications] ([HouseholdFull]).
const fullReason = "applications, the most it may"

// householdOf returns the household cmd's context names, and rejects a
// command whose household_id is missing, not a string, or not a token,
// saying which.
func householdOf(cmd *messages.Command) (string, error) {
	id, err := cmd.Context.String(KeyHousehold)
	switch {
	case err != nil:
		return "", agent.Reject("bad %s: %v", KeyHousehold, err)
	case !messages.ValidToken(id):
		return "", agent.Reject("bad %s: %q", KeyHousehold, id)
	}
	return id, nil
}

func setApplication(tx agent.Tx, cmd *messages.Command, status string) error {
	id, err := householdOf(cmd)
	if err != nil {
		return err
	}
	var h House
	if _, err := tx.Get(HouseKey(id), &h); err != nil {
		return err
	}
	if h.Applications == nil {
		h.Applications = map[string]string{}
	}
	if _, kept := h.Applications[cmd.SagaID]; !kept && len(h.Applications) >= MaxApplications {
		if cmd.Action == messages.Execute {
			return agent.Reject("household %s keeps %d %s", id, MaxApplications, fullReason)
		}
		return nil // nothing of this saga's to cancel
	}
	h.Applications[cmd.SagaID] = status
	return tx.Put(HouseKey(id), h)
}

// GovernmentSteps are the government's steps. It evaluates subsidy
// applications against its budget, deducts approved subsidies, and
// allocates elevation grants; each deduction is refunded by its
// compensation.
func GovernmentSteps() []agent.Step {
	return []agent.Step{
		{Saga: Subsidy, Name: "government_evaluates", Handler: agent.Handler{
			Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
				cost, err := amount(cmd.Context, KeySubsidyCost, DefaultSubsidyCost)
				if err != nil {
					return nil, err
				}
				l, err := readLedger(tx)
				if err != nil {
					return nil, err
				}
				if l.Balance < cost {
					return nil, agent.Reject("budget insufficient: %d cents left, subsidy costs %d", l.Balance, cost)
				}
				return messages.Context{}.MustSet(KeyApproved, true), nil
			},
			// Approval changed no state; undoing it is recorded by the barrier.
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}},
		payStep(Subsidy, "budget_deducted", "budget insufficient", KeySubsidyPaid, func(c messages.Context) (int64, error) {
			var approved bool
			if err := c.Get(KeyApproved, &approved); err != nil || !approved {
				return 0, agent.Reject("subsidy not approved")
			}
			return amount(c, KeySubsidyCost, DefaultSubsidyCost)
		}),
		payStep(Elevation, "government_approves", "budget insufficient for elevation", KeyGrant, func(c messages.Context) (int64, error) {
			return amount(c, KeyElevationCost, DefaultElevationCost)
		}),
	}
}

// payStep is a step that pays from the role's ledger, on behalf of
// sagaType, the amount that amountOf reads from the context, and records it
// under outKey; its compensation refunds the same amount. A ledger too
// short to pay is a business rejection with reason short.
func payStep(sagaType, name, short, outKey string, amountOf func(messages.Context) (int64, error)) agent.Step {
	return agent.Step{Saga: sagaType, Name: name, Handler: agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			n, err := amountOf(cmd.Context)
			if err != nil {
				return nil, err
			}
			if err := spend(tx, sagaType, n, short); err != nil {
				return nil, err
			}
			return messages.Context{}.MustSet(outKey, n), nil
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			n, err := amountOf(cmd.Context)
			if err != nil {
				return err
			}
			return refund(tx, sagaType, n)
		},
	}}
}

// InsurerSteps are the insurer's steps: it evaluates claims (payout =
// damage - deductible, capped at the policy's coverage; damage at or below
// the deductible is rejected) and pays them from its fund.
func InsurerSteps() []agent.Step {
	return []agent.Step{
		{Saga: Insurance, Name: "insurer_evaluates", Handler: agent.Handler{
			Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				damage, err := amount(cmd.Context, KeyDamage, 0)
				if err != nil {
					return nil, err
				}
				deductible, err := amount(cmd.Context, KeyDeductible, DefaultDeductible)
				if err != nil {
					return nil, err
				}
				if damage <= deductible {
					return nil, agent.Reject("damage %d at or below the deductible %d", damage, deductible)
				}
				payout := damage - deductible
				if coverage, err := amount(cmd.Context, KeyCoverage, -1); err != nil {
					return nil, err
				} else if coverage >= 0 {
					payout = min(payout, coverage)
				}
				return messages.Context{}.MustSet(KeyPayout, payout).MustSet(KeyApproved, true), nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}},
		payStep(Insurance, "payout_issued", "insurer fund exhausted", KeyPayoutReceived, func(c messages.Context) (int64, error) {
			payout, err := c.Int64(KeyPayout)
			if err != nil || payout < 0 {
				return 0, agent.Reject("no approved payout")
			}
			return payout, nil
		}),
	}
}

// MaxContractorTicks bounds a context's contractor_ticks: a command held
// for simulation time holds a place of the role's in flight, so one held
// far beyond its saga's timeout would only crowd the others out.
const MaxContractorTicks = 100

// contractorTicks returns the context's contractor_ticks, and whether it
// is one the contractor takes: 0 to [MaxContractorTicks] (absent is 0).
func contractorTicks(cmd *messages.Command) (int64, bool) {
	d, err := cmd.Context.Int64(KeyContractorTicks)
	if err != nil {
		_, absent := cmd.Context[KeyContractorTicks]
		return 0, !absent
	}
	return d, d >= 0 && d <= MaxContractorTicks
}

// ContractorSteps is the contractor's step: it elevates the house, taking
// the context's contractor_ticks of simulation time, and refuses a site
// marked "unsuitable", or contractor_ticks that is not 0 to
// [MaxContractorTicks] (at once, holding nothing).
//
// A house is elevated once: the elevation of a house that another saga
// elevated already changes nothing, and its compensation leaves the house
// as it is. Only the compensation of the saga that elevated it lowers it:
// a later saga that times out while its contractor works must not undo
// an earlier one that completed.
func ContractorSteps() []agent.Step {
	elevate := func(up bool) func(tx agent.Tx, cmd *messages.Command) error {
		return func(tx agent.Tx, cmd *messages.Command) error {
			id, err := householdOf(cmd)
			if err != nil {
				return err
			}
			var h House
			if _, err := tx.Get(HouseKey(id), &h); err != nil {
				return err
			}
			mine := h.ElevatedBy == cmd.SagaID || h.ElevatedBy == ""
			switch {
			case up && h.Elevated, !up && (!h.Elevated || !mine):
				return nil // nothing of this saga's to change
			case up:
				h.Elevated, h.ElevatedBy = true, cmd.SagaID
			default:
				h.Elevated, h.ElevatedBy = false, ""
			}
			return tx.Put(HouseKey(id), h)
		}
	}
	return []agent.Step{
		{Saga: Elevation, Name: "contractor_elevates",
			Duration: func(cmd *messages.Command) int64 {
				if d, ok := contractorTicks(cmd); ok {
					return d
				}
				return 0
			},
			Handler: agent.Handler{
				Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
					if _, ok := contractorTicks(cmd); !ok {
						return nil, agent.Reject("contractor: %s %s: want an integer from 0 to %d",
							KeyContractorTicks, messages.Clip(string(cmd.Context[KeyContractorTicks])), MaxContractorTicks)
					}
					if site, _ := cmd.Context.String(KeySite); site == "unsuitable" {
						return nil, agent.Reject("contractor: site unsuitable for elevation")
					}
					if err := elevate(true)(tx, cmd); err != nil {
						return nil, err
					}
					return messages.Context{}.MustSet(KeyElevated, true), nil
				},
				Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
					return elevate(false)(tx, cmd)
				},
			}},
	}
}

func readLedger(tx agent.Tx) (Ledger, error) {
	var l Ledger
	ok, err := tx.Get(LedgerKey, &l)
	if err != nil {
		return l, err
	}
	if !ok {
		return l, errors.New("ledger not initialised")
	}
	if l.Spent == nil {
		l.Spent = map[string]int64{}
	}
	return l, nil
}

// spend takes cost from the ledger for sagaType, or rejects with reason when
// the balance is short.
func spend(tx agent.Tx, sagaType string, cost int64, reason string) error {
	l, err := readLedger(tx)
	if err != nil {
		return err
	}
	if l.Balance < cost {
		return agent.Reject("%s: %d cents left, %d needed", reason, l.Balance, cost)
	}
	l.Balance -= cost
	l.Spent[sagaType] += cost
	return tx.Put(LedgerKey, l)
}

func refund(tx agent.Tx, sagaType string, cost int64) error {
	l, err := readLedger(tx)
	if err != nil {
		return err
	}
	l.Balance += cost
	l.Spent[sagaType] -= cost
	return tx.Put(LedgerKey, l)
}
