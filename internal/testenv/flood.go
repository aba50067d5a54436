package testenv

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/participant"
)

// SubsidyAgents runs the household and the government agents of the flood
// model's subsidy saga on url until the test ends, the government with a
// budget for ten subsidies.
func SubsidyAgents(t testing.TB, url string) {
	t.Helper()
	for _, role := range []string{flood.Household, flood.Government} {
		steps, err := flood.Steps(role)
		require.NoError(t, err)
		opts := participant.Options{Role: role, Steps: steps}
		if role == flood.Government {
			opts.Init = flood.InitLedger(10 * flood.DefaultSubsidyCost)
		}
		Agent(t, url, opts)
	}
}
