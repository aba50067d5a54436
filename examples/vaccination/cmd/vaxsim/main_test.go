package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFlagsRefused: flags that cannot run a campaign exit 2, saying why,
// before anything starts.
func TestFlagsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"-agents-elsewhere"}, "vaxsim: -agents-elsewhere and -coordinator-elsewhere need -nats, the server they run on\n"},
		{[]string{"-coordinator-elsewhere"}, "vaxsim: -agents-elsewhere and -coordinator-elsewhere need -nats, the server they run on\n"},
		{[]string{"-copies", "9"}, "vaxsim: -patients and -ticks must be positive, -stock not negative, -copies 1 to 8\n"},
		{[]string{"run"}, "vaxsim: unexpected arguments: [run]\n"},
	} {
		var stdout, stderr bytes.Buffer
		require.Equal(t, 2, mainCode(tc.args, &stdout, &stderr), "%v", tc.args)
		require.Equal(t, tc.says, stderr.String(), "%v", tc.args)
		require.Empty(t, stdout.String())
	}
}
