package coordinator

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLatestFitting: a list of finished sagas keeps the latest that fit the
// count and the bytes, oldest first, and is too_large only when the latest
// saga alone is over the budget.
func TestLatestFitting(t *testing.T) {
	saga := func(id string, size int) string { return id + strings.Repeat(".", size-len(id)) }
	for _, tc := range []struct {
		name          string
		limit, budget int
		add           []string
		want          []string
		tooLarge      string
	}{
		{name: "none", limit: 3, budget: 100},
		{name: "under both", limit: 3, budget: 100, add: []string{saga("a", 10), saga("b", 10)}, want: []string{"a", "b"}},
		{name: "count", limit: 2, budget: 100, add: []string{saga("a", 10), saga("b", 10), saga("c", 10)}, want: []string{"b", "c"}},
		{name: "bytes, with a separator each", limit: 9, budget: 33, add: []string{saga("a", 10), saga("b", 10), saga("c", 10), saga("d", 11)}, want: []string{"c", "d"}},
		{name: "exactly the budget", limit: 9, budget: 33, add: []string{saga("a", 10), saga("b", 10), saga("c", 10)}, want: []string{"a", "b", "c"}},
		{name: "a large one drops all older", limit: 9, budget: 33, add: []string{saga("a", 10), saga("b", 10), saga("c", 32)}, want: []string{"c"}},
		{name: "latest too large", limit: 9, budget: 33, add: []string{saga("a", 10), saga("b", 33)}, tooLarge: "b"},
		{name: "too large, then one that fits", limit: 9, budget: 33, add: []string{saga("a", 10), saga("b", 40), saga("c", 10)}, want: []string{"c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := latestFitting{limit: tc.limit, budget: tc.budget}
			for _, v := range tc.add {
				l.add(v[:1], []byte(v))
			}
			got, err := l.sagas()
			if tc.tooLarge != "" {
				require.ErrorIs(t, err, errTooLargeToAnswer)
				require.Contains(t, err.Error(), "saga "+tc.tooLarge+" ")
				return
			}
			require.NoError(t, err)
			var ids []string
			size := 0
			for _, raw := range got {
				ids = append(ids, string(raw[:1]))
				size += len(raw) + 1
			}
			require.Equal(t, tc.want, ids)
			require.LessOrEqual(t, size, tc.budget)
		})
	}
}
