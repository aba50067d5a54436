package flood

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// The state query: a flood agent answers it with its role's ledger and its
// records of households, in the documented formats of [Ledger] and [House]
// (docs/protocol.md, "The flood sagas"), so that a driver checks the
// invariants without reading an agent's store. An agent in another
// language answers it the same way.

// StateSubject is the subject on which the agents of role answer a
// [StateQuery] with a [StateAnswer].
func StateSubject(role string) string { return "flood.state." + role }

// MaxQueryHouseholds bounds the households of one [StateQuery].
const MaxQueryHouseholds = 500

// StateQuery asks a role's agents for its ledger and what it knows of
// some households.
type StateQuery struct {
	V          int      `json:"v"`
	Ledger     bool     `json:"ledger,omitempty"`
	Households []string `json:"households,omitempty"`
}

// StateAnswer answers a [StateQuery]. Ledger is nil for a role without
// one; Households holds the households the role has a record of.
type StateAnswer struct {
	V          int                 `json:"v"`
	Ledger     *Ledger             `json:"ledger,omitempty"`
	Households map[string]House    `json:"households,omitempty"`
	Error      *messages.WireError `json:"error,omitempty"`
}

// AnswerState answers the query req from a role's state, read through
// read (participant.QueryFunc's shape): read decodes the value of each of
// keys into value(i) and reports which keys have one. The query's
// households are read in one call.
func AnswerState(_ context.Context, req []byte, read func(keys []string, value func(i int) any) ([]bool, error)) any {
	var q StateQuery
	bad := func(err error) StateAnswer {
		return StateAnswer{V: messages.Version, Error: &messages.WireError{Code: messages.CodeBadRequest, Message: err.Error()}}
	}
	if err := json.Unmarshal(req, &q); err != nil {
		return bad(err)
	}
	if q.V != messages.Version {
		return bad(fmt.Errorf("version %d, want %d", q.V, messages.Version))
	}
	if len(q.Households) > MaxQueryHouseholds {
		return bad(fmt.Errorf("%d households, at most %d", len(q.Households), MaxQueryHouseholds))
	}
	for _, id := range q.Households {
		if err := messages.CheckToken(KeyHousehold, id); err != nil {
			return bad(err)
		}
	}
	fail := func(err error) StateAnswer {
		return StateAnswer{V: messages.Version, Error: &messages.WireError{Code: messages.CodeInternal, Message: err.Error()}}
	}
	a := StateAnswer{V: messages.Version}
	if q.Ledger {
		var l Ledger
		found, err := read([]string{LedgerKey}, func(int) any { return &l })
		if err != nil {
			return fail(err)
		}
		if found[0] {
			a.Ledger = &l
		}
	}
	if len(q.Households) == 0 {
		return a
	}
	keys := make([]string, len(q.Households))
	for i, id := range q.Households {
		keys[i] = HouseKey(id)
	}
	houses := make([]House, len(keys))
	found, err := read(keys, func(i int) any { return &houses[i] })
	if err != nil {
		return fail(err)
	}
	for i, id := range q.Households {
		if found[i] {
			if a.Households == nil {
				a.Households = map[string]House{}
			}
			a.Households[id] = houses[i]
		}
	}
	return a
}
