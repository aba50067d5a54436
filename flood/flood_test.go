package flood_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

func TestSubsidyHappyPath(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	testenv.Agent(t, url, participant.Options{Role: flood.Household, Steps: flood.HouseholdSteps()})
	testenv.Agent(t, url, participant.Options{Role: flood.Government, Steps: flood.GovernmentSteps(), Init: flood.InitLedger(20_000_00)})
	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, "h1"))
	x := testenv.WaitStatus(t, nc, id, saga.Completed)
	require.Equal(t, []string{"household_applies", "government_evaluates", "budget_deducted"}, x.Completed)
}
