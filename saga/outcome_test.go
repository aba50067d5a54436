package saga_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// manySagas returns n finished sagas, out of id order, each with a context
// of its own.
func manySagas(n int) []saga.Execution {
	xs := make([]saga.Execution, n)
	for i := range xs {
		k := (i * 7919) % n // a permutation: n is not a multiple of 7919
		xs[i] = saga.Execution{ID: saga.ID(fmt.Sprintf("s-%06d", k)), Saga: "subsidy", Rank: int64(k + 1),
			Status: saga.Completed, StartedTick: int64(k % 30), Completed: []string{"apply", "pay"},
			Context: messages.Context{"household": json.RawMessage(fmt.Sprintf(`"h%d"`, k)), "amount": json.RawMessage(fmt.Sprint(k * 100))},
			History: []saga.Transition{{Tick: int64(k%30 + 2), Status: saga.Completed}}}
	}
	return xs
}

// TestOutcomeLogWithJoinsItsChunksInOrder writes a log of more lines than
// one goroutine encodes: the same bytes as the lines encoded one after
// the other, in id order.
func TestOutcomeLogWithJoinsItsChunksInOrder(t *testing.T) {
	xs := manySagas(10_007)
	var want []byte
	lines := make([]saga.OutcomeLine, len(xs))
	for i := range xs {
		lines[i] = xs[i].Outcome()
	}
	slices.SortFunc(lines, func(a, b saga.OutcomeLine) int { return strings.Compare(string(a.ID), string(b.ID)) })
	for i := range lines {
		b, err := json.Marshal(&lines[i])
		require.NoError(t, err)
		want = append(append(want, b...), '\n')
	}
	log, digest, err := saga.OutcomeLog(xs)
	require.NoError(t, err)
	require.Equal(t, string(want), string(log))
	require.Len(t, digest, 64)
	require.True(t, strings.HasPrefix(string(log), `{"saga_id":"s-000000",`), "first line: %.60s", log)
}

// TestOutcomeLogWithReportsTheFirstError fails two lines far apart, in
// different chunks: the error is the first one's in the log.
func TestOutcomeLogWithReportsTheFirstError(t *testing.T) {
	xs := manySagas(10_007)
	bad := errors.New("bad line")
	_, _, err := saga.OutcomeLogWith(xs, func(dst []byte, o *saga.OutcomeLine) ([]byte, error) {
		if o.ID == "s-009000" || o.ID == "s-001234" {
			return dst, bad
		}
		return append(dst, o.ID...), nil
	})
	require.ErrorIs(t, err, bad)
	require.ErrorContains(t, err, "outcome of s-001234")
}
