package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/saga"
)

// TestHolding names the sagas that hold a tick: those owing an answer due
// by now, and of the ranked ones only those of the lowest round owing one,
// not the later rounds held back behind it.
func TestHolding(t *testing.T) {
	const tick = 23
	awaiting := func(id string, rank, round int64) saga.Execution {
		return saga.Execution{ID: saga.ID(id), Rank: rank, Round: round, Awaiting: true}
	}
	working := func(id string, rank, round, until int64) saga.Execution {
		return saga.Execution{ID: saga.ID(id), Rank: rank, Round: round, Working: true, Until: until}
	}
	retrying := saga.Execution{ID: "retry", Rank: 9, Round: 66, RetryAt: time.Unix(1, 0)}
	for _, tc := range []struct {
		name   string
		active []saga.Execution
		want   []saga.ID
	}{
		{"none", nil, nil},
		{"a later round waits behind a working command due",
			[]saga.Execution{awaiting("a", 1, 67), awaiting("b", 2, 67), working("c", 3, 66, 23)}, []saga.ID{"c"}},
		{"work not yet due holds nothing", []saga.Execution{working("c", 3, 66, 24), working("d", 4, 66, 0)}, nil},
		{"a retry owes its round", []saga.Execution{awaiting("a", 1, 67), retrying}, []saga.ID{"retry"}},
		{"unranked sagas owe whatever the rounds",
			[]saga.Execution{awaiting("a", 1, 67), awaiting("u", 0, 0), awaiting("b", 2, 66)}, []saga.ID{"u", "b"}},
		{"at most n", []saga.Execution{awaiting("a", 1, 5), awaiting("b", 2, 5), awaiting("c", 3, 5), awaiting("d", 4, 5)},
			[]saga.ID{"a", "b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []saga.ID
			for _, x := range holding(tc.active, tick, 3) {
				got = append(got, x.ID)
			}
			require.Equal(t, tc.want, got)
		})
	}
}
