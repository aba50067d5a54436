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

// TestRecentHoldsTheBytesPutLast: a recent map with a size holds the keys
// put last whose values fit its bytes, and always the one put last.
func TestRecentHoldsTheBytesPutLast(t *testing.T) {
	r := newSizedRecent(100, 10, func(v string) int { return len(v) })
	held := func() []string {
		var ks []string
		for _, k := range []string{"a", "b", "c", "d", "e"} {
			if _, ok := r.get(k); ok {
				ks = append(ks, k)
			}
		}
		return ks
	}
	for _, tc := range []struct {
		key, value string
		held       []string
		bytes      int
	}{
		{"a", "aaaa", []string{"a"}, 4},
		{"b", "bbbb", []string{"a", "b"}, 8},
		{"c", "cc", []string{"a", "b", "c"}, 10},
		{"d", "d", []string{"b", "c", "d"}, 7},     // a let go: 11 bytes
		{"b", "b", []string{"b", "c", "d"}, 4},     // b smaller: its old size taken off
		{"e", "eeeeeeeeeeee", []string{"e"}, 12},   // larger than all: held alone
		{"a", "a", []string{"a"}, 1},               // e let go: 13 bytes
		{"c", "ccccccccc", []string{"a", "c"}, 10}, // exactly the bound
		{"d", "dd", []string{"d"}, 2},              // a, then c let go
	} {
		r.put(tc.key, tc.value)
		require.Equal(t, tc.held, held(), "after %s=%s", tc.key, tc.value)
		require.Equal(t, tc.bytes, r.bytes, "after %s=%s", tc.key, tc.value)
	}
	r.put("a", "aaa")
	r.delete("d")
	require.Equal(t, 3, r.bytes)
	r.delete("d")
	require.Equal(t, 3, r.bytes, "a key gone is taken off once")
	r.clear()
	require.Zero(t, r.bytes)
}
