package participant

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRecentHoldsTheKeysPutLast: beside a key put at every other put (a
// budget), a recent map holds its max keys, the ones put last, with their
// last values, and as few notes as twice that.
func TestRecentHoldsTheKeysPutLast(t *testing.T) {
	const max = 16
	r := newRecent[int](max)
	for i := range 10 * max {
		r.put("budget", i)
		r.put(fmt.Sprint("h-", i), i)
		require.LessOrEqual(t, r.len(), max)
		require.LessOrEqual(t, len(r.notes), 2*max+64)
	}
	require.Equal(t, max, r.len())
	v, ok := r.get("budget")
	require.True(t, ok)
	require.Equal(t, 10*max-1, v)
	for i := range 10 * max {
		v, ok := r.get(fmt.Sprint("h-", i))
		require.Equal(t, i >= 9*max+1, ok, i) // the last max-1, and the budget
		if ok {
			require.Equal(t, i, v)
		}
	}
	r.delete("budget")
	r.put("x", 1)
	require.Equal(t, max, r.len(), "a key let go leaves room")
	r.clear()
	require.Zero(t, r.len())
	r.put("y", 2)
	v, ok = r.get("y")
	require.True(t, ok)
	require.Equal(t, 2, v)
}
