package flood_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/saga"
)

// TestSagasFileHoldsTheFloodSagas pins flood/sagas.json to the sagas the
// model was written for: a change to the file is a change to the model.
func TestSagasFileHoldsTheFloodSagas(t *testing.T) {
	require.Equal(t, []saga.Definition{
		{
			Name: "subsidy_application", Subject: flood.Subsidy, Version: 1,
			Description: "Household applies for subsidy -> Government evaluates -> Budget deducted",
			Steps: []saga.Step{
				{Name: "household_applies", Role: flood.Household, Compensation: "cancel_application"},
				{Name: "government_evaluates", Role: flood.Government, Compensation: "undo_approval"},
				{Name: "budget_deducted", Role: flood.Government, Compensation: "refund_budget"},
			},
		},
		{
			Name: "insurance_claim", Subject: flood.Insurance, Version: 1, TimeoutTicks: 3,
			Description: "Household files claim -> Insurer evaluates -> Payout issued",
			Steps: []saga.Step{
				{Name: "household_files", Role: flood.Household, Compensation: "cancel_claim"},
				{Name: "insurer_evaluates", Role: flood.Insurer, Compensation: "revert_approval"},
				{Name: "payout_issued", Role: flood.Insurer, Compensation: "revoke_payout"},
			},
		},
		{
			Name: "elevation_grant", Subject: flood.Elevation, Version: 1, TimeoutTicks: 5,
			Description: "Household requests elevation -> Government approves -> Contractor elevates",
			Steps: []saga.Step{
				{Name: "household_requests", Role: flood.Household, Compensation: "cancel_request"},
				{Name: "government_approves", Role: flood.Government, Compensation: "restore_budget"},
				{Name: "contractor_elevates", Role: flood.Contractor, Compensation: "undo_elevation", TimeoutTicks: 3},
			},
		},
	}, flood.Definitions())
	require.Equal(t, flood.Definitions()[2], flood.ElevationSaga())
}
