package flood

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

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
// read (participant.QueryFunc's shape), which must be safe for concurrent
// use: the households are read side by side.
func AnswerState(_ context.Context, req []byte, read func(key string, v any) (bool, error)) any {
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
	a := StateAnswer{V: messages.Version}
	fail := func(err error) StateAnswer {
		return StateAnswer{V: messages.Version, Error: &messages.WireError{Code: messages.CodeInternal, Message: err.Error()}}
	}
	if q.Ledger {
		var l Ledger
		ok, err := read(LedgerKey, &l)
		if err != nil {
			return fail(err)
		}
		if ok {
			a.Ledger = &l
		}
	}
	for _, id := range q.Households {
		if err := messages.CheckToken(KeyHousehold, id); err != nil {
			return bad(err)
		}
	}
	houses, found, err := readHouses(q.Households, read)
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

// queryReads bounds the reads one query has under way at once. Each waits
// for a round trip to the agent's store: one at a time, a driver's check
// of 100,000 households took seven seconds of the household agents'
// answers (BENCHMARKS.md, "Collecting less often").
const queryReads = 16

// readHouses reads the households ids through read, at most queryReads at
// once, and returns what it read and which it found, in the order of ids;
// on errors, the first household's in that order.
func readHouses(ids []string, read func(key string, v any) (bool, error)) ([]House, []bool, error) {
	houses := make([]House, len(ids))
	found := make([]bool, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	sem := make(chan struct{}, queryReads)
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			found[i], errs[i] = read(HouseKey(id), &houses[i])
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, nil, err
		}
	}
	return houses, found, nil
}
