package cli_test

import (
	"bytes"
	"errors"
	"flag"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/cli"
)

// TestUsageCodeFor: a bad command line exits 2, but a health check's,
// which Docker reads, exits 1; -h exits 0.
func TestUsageCodeFor(t *testing.T) {
	bad := errors.New("flag provided but not defined: -bogus")
	for _, tc := range []struct {
		args []string
		err  error
		want int
	}{
		{[]string{"-bogus"}, bad, 2},
		{[]string{"-healthcheck", "-bogus"}, bad, 1},
		{[]string{"--healthcheck", "-bogus"}, bad, 1},
		{[]string{"-healthcheck=true", "-bogus"}, bad, 1},
		{[]string{"-healthcheck=1", "-bogus"}, bad, 1},
		{[]string{"-healthcheck=false", "-bogus"}, bad, 2},
		{[]string{"-healthcheckx", "-bogus"}, bad, 2},
		{[]string{"--", "-healthcheck"}, bad, 2},
		{[]string{"healthcheck"}, bad, 2},
		{[]string{"-healthcheck", "-h"}, flag.ErrHelp, 0},
	} {
		var out bytes.Buffer
		require.Equal(t, tc.want, cli.UsageCodeFor(tc.args, tc.err, &out), "%v", tc.args)
	}
}
