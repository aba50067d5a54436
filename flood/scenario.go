package flood

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/natsaga/natsaga/messages"
)

// Scenario defaults, used when a [ScenarioOptions] field is zero.
const (
	DefaultHouseholds = 200
	DefaultTicks      = 30
)

// SlowContractorTicks is the least contractor_ticks the scenario gives a
// slow contractor. It is past the contractor step's timeout of 3 ticks by
// two: a step dispatched at tick d times out at tick d+4, and a contractor
// that would answer at tick d+4 itself could race the timeout either way.
const SlowContractorTicks = 5

// SiteUnsuitable is the context value of [KeySite] that makes the
// contractor refuse an elevation; any other value is a suitable site.
const SiteUnsuitable = "unsuitable"

// SiteSuitable is the context value of [KeySite] for a site the contractor
// can elevate.
const SiteSuitable = "suitable"

// ScenarioOptions configures [NewScenario]. The zero value is the default
// scenario with seed 0.
type ScenarioOptions struct {
	// Seed makes the scenario: the same options give the same scenario.
	Seed int64 `json:"seed"`
	// Households is how many households live in the flood plain. 0 means
	// DefaultHouseholds.
	Households int `json:"households"`
	// Ticks is how many ticks of simulation time the scenario plans
	// needs for. 0 means DefaultTicks.
	Ticks int `json:"ticks"`
}

// MaxScenarioCount is the most households, and the most ticks, of a
// scenario.
const MaxScenarioCount = 100_000

// MaxScenarioSize is the most households times ticks of a scenario: the
// 100,000-household, 100-tick run. A scenario's plan holds every
// household's needs at every tick, so each count at its most would take
// more memory than a machine has.
const MaxScenarioSize = 10_000_000

// Validate returns an error when o has a negative count, more than
// [MaxScenarioCount] households or ticks, or more than [MaxScenarioSize]
// households times ticks. Zero counts are valid: they mean the defaults.
func (o ScenarioOptions) Validate() error {
	var errs []error
	if o.Households < 0 || o.Households > MaxScenarioCount {
		errs = append(errs, fmt.Errorf("households %d: want 0 (the default) to %d", o.Households, MaxScenarioCount))
	}
	if o.Ticks < 0 || o.Ticks > MaxScenarioCount {
		errs = append(errs, fmt.Errorf("ticks %d: want 0 (the default) to %d", o.Ticks, MaxScenarioCount))
	}
	if err := CheckScenarioSize(cmp.Or(o.Households, DefaultHouseholds), cmp.Or(o.Ticks, DefaultTicks)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CheckScenarioSize returns an error when households times ticks is more
// than [MaxScenarioSize].
func CheckScenarioSize(households, ticks int) error {
	if households > 0 && ticks > MaxScenarioSize/households {
		return fmt.Errorf("%d households for %d ticks: want at most %d households times ticks", households, ticks, MaxScenarioSize)
	}
	return nil
}

// Home is one household's profile in a scenario.
type Home struct {
	// ID is the household's id, the context's household_id.
	ID string `json:"id"`
	// Zone is the flood zone, 0 (riverside, most exposed) to 3 (highest
	// ground).
	Zone int `json:"zone"`
	// Insured households claim their damage from the insurer.
	Insured bool `json:"insured"`
	// Deductible and Coverage are the insurance policy, in cents.
	Deductible int64 `json:"deductible,omitempty"`
	Coverage   int64 `json:"coverage,omitempty"`
	// Value is the house's value, in cents.
	Value int64 `json:"value"`
	// Unsuitable marks a site the contractor cannot elevate.
	Unsuitable bool `json:"unsuitable,omitempty"`
}

// Flood is a flood that strikes at one tick.
type Flood struct {
	Tick int `json:"tick"`
	// Severity is the flood's strength in percent (1 to 100).
	Severity int `json:"severity"`
	// Damaged lists the households it damages, with the damage in cents.
	Damaged []Damage `json:"damaged"`
}

// Damage is the damage one flood did to one household.
type Damage struct {
	Household string `json:"household"`
	Cents     int64  `json:"cents"`
}

// Need is one saga the scenario starts: a household that files a claim,
// applies for a subsidy or requests an elevation grant at a tick. Only the
// fields of its saga type are set.
type Need struct {
	Tick      int    `json:"tick"`
	Saga      string `json:"saga"`
	Household string `json:"household"`
	// Insurance.
	Damage     int64 `json:"damage,omitempty"`
	Deductible int64 `json:"deductible,omitempty"`
	Coverage   int64 `json:"coverage,omitempty"`
	// Subsidy.
	SubsidyCost int64 `json:"subsidy_cost,omitempty"`
	// Elevation.
	ElevationCost   int64  `json:"elevation_cost,omitempty"`
	ContractorTicks int64  `json:"contractor_ticks,omitempty"`
	Site            string `json:"site,omitempty"`
}

// Context returns the saga context that starts n's saga, with the context
// keys of package flood.
func (n Need) Context() messages.Context {
	c := messages.Context{}.MustSet(KeyHousehold, n.Household)
	switch n.Saga {
	case Insurance:
		c.MustSet(KeyDamage, n.Damage).MustSet(KeyDeductible, n.Deductible).MustSet(KeyCoverage, n.Coverage)
	case Subsidy:
		c.MustSet(KeySubsidyCost, n.SubsidyCost)
	case Elevation:
		c.MustSet(KeyElevationCost, n.ElevationCost).MustSet(KeyContractorTicks, n.ContractorTicks).MustSet(KeySite, n.Site)
	}
	return c
}

// Expected is what a scenario's needs are built to produce, assuming every
// saga runs to its end. Emergent outcomes, such as which subsidies the
// budget runs out on, are not predicted.
type Expected struct {
	// BelowDeductible counts claims whose damage is at or below the
	// deductible: the insurer rejects them.
	BelowDeductible int `json:"below_deductible"`
	// Unsuitable counts elevation requests on sites the contractor
	// refuses (and that are not slow: a slow one times out first).
	Unsuitable int `json:"unsuitable"`
	// Slow counts elevation requests whose contractor takes longer than
	// the step's timeout.
	Slow int `json:"slow"`
	// GovernmentDemand is what the subsidies and the elevations that can
	// succeed would cost, in cents: the government budget is a fraction
	// of it, so it runs out partway.
	GovernmentDemand int64 `json:"government_demand"`
	// Payouts is what every claim above its deductible would pay out.
	Payouts int64 `json:"payouts"`
}

// Scenario is a seeded flood simulation plan: the households, the floods,
// and the sagas the households start as floods strike and needs arise. It
// depends on its options only, never on how the sagas end, so the same
// options always give an equal Scenario.
type Scenario struct {
	Options ScenarioOptions `json:"options"`
	Homes   []Home          `json:"homes"`
	Floods  []Flood         `json:"floods"`
	// Needs holds the needs of tick t at index t-1, in the order they are
	// started.
	Needs [][]Need `json:"needs"`
	// GovernmentBudget and InsurerFund are the opening ledgers, in cents,
	// that the scenario is sized for.
	GovernmentBudget int64    `json:"government_budget"`
	InsurerFund      int64    `json:"insurer_fund"`
	Expected         Expected `json:"expected"`
}

// The shape of the model. Probabilities are in percent.
var zoneExposure = [4]int{60, 35, 15, 5}

const (
	floodChance       = 45 // a flood strikes at a tick
	insuredChance     = 70
	unsuitableChance  = 10
	minorDamageChance = 20 // damage at or below the deductible
	subsidyChance     = 35 // a damaged household applies for a subsidy
	elevationChance   = 25 // a damaged household in zone 0 or 1 asks to be elevated
	slowChance        = 12 // the contractor is slower than its timeout
	budgetShare       = 50 // the government budget as a share of its demand
	fundMargin        = 10 // the insurer fund's margin over every payout
)

// NewScenario makes the scenario of opts. It returns an error when opts do
// not validate. The guarantees, for a scenario with enough needs: at least
// one claim at or below its deductible; one elevation on an unsuitable site
// and one with a slow contractor, early enough that the budget pays their
// grants; and a government budget short of its demand, so it runs out
// partway.
func NewScenario(opts ScenarioOptions) (*Scenario, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	if opts.Households == 0 {
		opts.Households = DefaultHouseholds
	}
	if opts.Ticks == 0 {
		opts.Ticks = DefaultTicks
	}
	rng := rand.New(rand.NewPCG(uint64(opts.Seed), 0x9e3779b97f4a7c15))
	pct := func(p int) bool { return rng.IntN(100) < p }
	between := func(lo, hi, step int64) int64 { return lo + rng.Int64N((hi-lo)/step+1)*step }

	s := &Scenario{Options: opts, Needs: make([][]Need, opts.Ticks)}
	for i := range opts.Households {
		h := Home{
			ID:         fmt.Sprintf("hh-%04d", i+1),
			Zone:       rng.IntN(len(zoneExposure)),
			Value:      between(150_000_00, 450_000_00, 5_000_00),
			Unsuitable: pct(unsuitableChance),
		}
		if h.Insured = pct(insuredChance); h.Insured {
			h.Deductible = []int64{DefaultDeductible, 2_500_00, 5_000_00}[rng.IntN(3)]
			h.Coverage = between(50_000_00, 250_000_00, 10_000_00)
		}
		s.Homes = append(s.Homes, h)
	}

	requested := map[string]bool{} // households that asked for elevation
	for tick := 1; tick <= opts.Ticks; tick++ {
		// The first tick always floods, so that every run starts sagas.
		if tick > 1 && !pct(floodChance) {
			continue
		}
		f := Flood{Tick: tick, Severity: 20 + rng.IntN(81)}
		var needs []Need
		for _, h := range s.Homes {
			if rng.IntN(100*100) >= f.Severity*zoneExposure[h.Zone] {
				continue
			}
			var damage int64
			if h.Insured && pct(minorDamageChance) {
				damage = between(1_00, h.Deductible, 1_00)
			} else {
				// 2% to 25% of the house's value, scaled by severity.
				damage = max(h.Value*int64(f.Severity)*int64(2+rng.IntN(24))/100/100/100*100, 100_00)
			}
			f.Damaged = append(f.Damaged, Damage{Household: h.ID, Cents: damage})
			if h.Insured {
				needs = append(needs, Need{Tick: tick, Saga: Insurance, Household: h.ID,
					Damage: damage, Deductible: h.Deductible, Coverage: h.Coverage})
			}
			if pct(subsidyChance) {
				needs = append(needs, Need{Tick: tick, Saga: Subsidy, Household: h.ID, SubsidyCost: DefaultSubsidyCost})
			}
			if h.Zone <= 1 && !requested[h.ID] && pct(elevationChance) {
				requested[h.ID] = true
				n := Need{Tick: tick, Saga: Elevation, Household: h.ID,
					ElevationCost: between(8_000_00, 15_000_00, 500_00), ContractorTicks: 1 + rng.Int64N(3), Site: SiteSuitable}
				if pct(slowChance) {
					n.ContractorTicks = SlowContractorTicks + rng.Int64N(2)
				}
				if h.Unsuitable {
					n.Site = SiteUnsuitable
				}
				needs = append(needs, n)
			}
		}
		s.Floods = append(s.Floods, f)
		s.Needs[tick-1] = needs
	}
	s.ensureOutcomes()
	s.size()
	return s, nil
}

// ensureOutcomes makes sure that a scenario with enough needs has each
// planned kind of failure at least once, by changing needs that already
// exist, so the scenario stays deterministic: the first claim becomes one
// below its deductible when none is, and among the early elevations (see
// safeTick) one goes to an unsuitable site and one gets a slow contractor,
// unless some already do.
func (s *Scenario) ensureOutcomes() {
	var claims []*Need
	for t := range s.Needs {
		for i := range s.Needs[t] {
			if n := &s.Needs[t][i]; n.Saga == Insurance {
				claims = append(claims, n)
			}
		}
	}
	if len(claims) >= 2 && !slices.ContainsFunc(claims, func(n *Need) bool { return n.Damage <= n.Deductible }) {
		claims[0].Damage = claims[0].Deductible / 2
	}

	safeTick := s.safeTick()
	var early []*Need
	for t := 1; t <= safeTick; t++ {
		for i := range s.Needs[t-1] {
			if n := &s.Needs[t-1][i]; n.Saga == Elevation {
				early = append(early, n)
			}
		}
	}
	if len(early) < 2 {
		return
	}
	var unsuitable, slow *Need
	for _, n := range early {
		switch {
		case unsuitable == nil && n.Site == SiteUnsuitable && n.ContractorTicks < SlowContractorTicks:
			unsuitable = n
		case slow == nil && n.Site != SiteUnsuitable && n.ContractorTicks >= SlowContractorTicks:
			slow = n
		}
	}
	for _, n := range early {
		if unsuitable == nil && n != slow {
			unsuitable = n
			n.Site, n.ContractorTicks = SiteUnsuitable, 1
		}
	}
	for _, n := range early {
		if slow == nil && n != unsuitable {
			slow = n
			n.Site, n.ContractorTicks = SiteSuitable, SlowContractorTicks
		}
	}
	for _, n := range []*Need{unsuitable, slow} {
		for i := range s.Homes {
			if s.Homes[i].ID == n.Household {
				s.Homes[i].Unsuitable = n.Site == SiteUnsuitable
			}
		}
	}
}

// safeTick is the tick of the second elevation need, 0 when there are
// fewer than two. The budget is sized to pay every government need up to
// it (see size), so the elevations that end on the contractor's refusal or
// a timeout there are not refused for want of budget first.
func (s *Scenario) safeTick() int {
	seen := 0
	for t, needs := range s.Needs {
		for _, n := range needs {
			if n.Saga == Elevation {
				if seen++; seen == 2 {
					return t + 1
				}
			}
		}
	}
	return 0
}

// governmentCost is what n asks of the government's budget.
func (n Need) governmentCost() int64 {
	switch n.Saga {
	case Subsidy:
		return n.SubsidyCost
	case Elevation:
		return n.ElevationCost
	}
	return 0
}

// size counts what the needs are built to produce and sizes the ledgers.
// The budget is half of what the government is asked for by the needs that
// can succeed, so it runs out partway and some are refused: they cannot
// all be paid. When that is less than every government need up to
// safeTick costs (the elevations that fail later hold their grant for a
// while), the budget is raised to that, as long as it stays short of the
// demand.
func (s *Scenario) size() {
	var e Expected
	var early int64
	safeTick := s.safeTick()
	for t, needs := range s.Needs {
		for _, n := range needs {
			if t+1 <= safeTick {
				early += n.governmentCost()
			}
			switch n.Saga {
			case Insurance:
				if n.Damage <= n.Deductible {
					e.BelowDeductible++
				} else {
					e.Payouts += min(n.Damage-n.Deductible, n.Coverage)
				}
			case Subsidy:
				e.GovernmentDemand += n.SubsidyCost
			case Elevation:
				switch {
				case n.ContractorTicks >= SlowContractorTicks:
					e.Slow++
				case n.Site == SiteUnsuitable:
					e.Unsuitable++
				default:
					e.GovernmentDemand += n.ElevationCost
				}
			}
		}
	}
	s.Expected = e
	s.GovernmentBudget = e.GovernmentDemand * budgetShare / 100
	if early > s.GovernmentBudget && early < e.GovernmentDemand {
		s.GovernmentBudget = early
	}
	s.InsurerFund = e.Payouts + e.Payouts*fundMargin/100
}

// NeedsAt returns the needs of tick, nil for a tick outside the scenario.
func (s *Scenario) NeedsAt(tick int) []Need {
	if tick < 1 || tick > len(s.Needs) {
		return nil
	}
	return s.Needs[tick-1]
}

// Count returns how many needs of each saga type the scenario has.
func (s *Scenario) Count() map[string]int {
	c := map[string]int{}
	for _, needs := range s.Needs {
		for _, n := range needs {
			c[n.Saga]++
		}
	}
	return c
}
