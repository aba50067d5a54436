package agentcmd

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCents reads a ledger flag: a whole number of cents, not negative,
// each error saying what is wrong.
func TestCents(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{"62300000", 62300000, ""},
		{"0", 0, ""},
		{"-1", 0, "-1: must not be negative"},
		{"12.5", 0, "not a whole number of cents"},
		{"99999999999999999999", 0, "out of range: at most 9223372036854775807 cents"},
	} {
		var c cents
		err := c.Set(tc.in)
		if tc.err != "" {
			require.EqualError(t, err, tc.err, tc.in)
			continue
		}
		require.NoError(t, err, tc.in)
		require.Equal(t, tc.want, int64(c), tc.in)
	}
}
