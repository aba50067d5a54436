package flood

import "github.com/natsaga/natsaga/saga"

// The roles.
const (
	Household  = "household"
	Government = "government"
	Insurer    = "insurer"
	Contractor = "contractor"
)

// The saga subjects.
const (
	Subsidy   = "subsidy"
	Insurance = "insurance"
	Elevation = "elevation"
)

// Default amounts, in cents.
const (
	DefaultSubsidyCost   int64 = 5_000_00
	DefaultDeductible    int64 = 1_000_00
	DefaultElevationCost int64 = 10_000_00
)

// Context keys.
const (
	KeyHousehold       = "household_id"
	KeySubsidyCost     = "subsidy_cost"
	KeyDamage          = "damage"
	KeyDeductible      = "deductible"
	KeyCoverage        = "coverage"
	KeyElevationCost   = "elevation_cost"
	KeyContractorTicks = "contractor_ticks"
	KeySite            = "site"
	KeyApproved        = "approved"
	KeySubsidyPaid     = "subsidy_paid"
	KeyPayout          = "payout"
	KeyPayoutReceived  = "payout_received"
	KeyGrant           = "grant_allocated"
	KeyElevated        = "elevated"
	KeyStatus          = "application_status"
)

// SubsidySaga is "household applies for subsidy → government evaluates →
// budget deducted". Each step has the default timeout of 1 tick.
func SubsidySaga() saga.Definition {
	return saga.Definition{
		Name:        "subsidy_application",
		Subject:     Subsidy,
		Description: "Household applies for subsidy -> Government evaluates -> Budget deducted",
		Steps: []saga.Step{
			{Name: "household_applies", Role: Household, Compensation: "cancel_application"},
			{Name: "government_evaluates", Role: Government, Compensation: "undo_approval"},
			{Name: "budget_deducted", Role: Government, Compensation: "refund_budget"},
		},
	}
}

// InsuranceSaga is "household files a claim → insurer evaluates → payout
// issued", with a saga timeout of 3 ticks.
func InsuranceSaga() saga.Definition {
	return saga.Definition{
		Name:        "insurance_claim",
		Subject:     Insurance,
		Description: "Household files claim -> Insurer evaluates -> Payout issued",
		Steps: []saga.Step{
			{Name: "household_files", Role: Household, Compensation: "cancel_claim"},
			{Name: "insurer_evaluates", Role: Insurer, Compensation: "revert_approval"},
			{Name: "payout_issued", Role: Insurer, Compensation: "revoke_payout"},
		},
		TimeoutTicks: 3,
	}
}

// ElevationSaga is "household requests elevation → government approves
// (allocating the cost from its budget) → contractor elevates", with a saga
// timeout of 5 ticks, 3 of them for the contractor.
func ElevationSaga() saga.Definition {
	return saga.Definition{
		Name:        "elevation_grant",
		Subject:     Elevation,
		Description: "Household requests elevation -> Government approves -> Contractor elevates",
		Steps: []saga.Step{
			{Name: "household_requests", Role: Household, Compensation: "cancel_request"},
			{Name: "government_approves", Role: Government, Compensation: "restore_budget"},
			{Name: "contractor_elevates", Role: Contractor, Compensation: "undo_elevation", TimeoutTicks: 3},
		},
		TimeoutTicks: 5,
	}
}

// Definitions returns the three flood sagas.
func Definitions() []saga.Definition {
	return []saga.Definition{SubsidySaga(), InsuranceSaga(), ElevationSaga()}
}
