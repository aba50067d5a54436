package flood

import (
	_ "embed"

	"github.com/natsaga/natsaga/saga"
)

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

// SagasFile is flood's definitions file, flood/sagas.json, shipped inside
// every program that imports flood: `coordinator -definitions FILE` with
// a copy of it runs the flood sagas as the coordinator's default does.
//
//go:embed sagas.json
var SagasFile []byte

// fileDefinition returns the saga named name from [SagasFile]. The file is
// part of the program and tested, so a bad one is a build defect: it
// panics.
func fileDefinition(name string) saga.Definition {
	for _, d := range Definitions() {
		if d.Name == name {
			return d
		}
	}
	panic("flood: sagas.json has no saga " + name)
}

// SubsidySaga is "household applies for subsidy → government evaluates →
// budget deducted". Each step has the default timeout of 1 tick.
func SubsidySaga() saga.Definition { return fileDefinition("subsidy_application") }

// InsuranceSaga is "household files a claim → insurer evaluates → payout
// issued", with a saga timeout of 3 ticks.
func InsuranceSaga() saga.Definition { return fileDefinition("insurance_claim") }

// ElevationSaga is "household requests elevation → government approves
// (allocating the cost from its budget) → contractor elevates", with a saga
// timeout of 5 ticks, 3 of them for the contractor.
func ElevationSaga() saga.Definition { return fileDefinition("elevation_grant") }

// Definitions returns the three flood sagas, read from [SagasFile].
func Definitions() []saga.Definition {
	defs, err := saga.ParseFile(SagasFile)
	if err != nil {
		panic("flood: sagas.json: " + err.Error())
	}
	return defs
}
