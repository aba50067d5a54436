package flood_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
)

func TestScenarioDeterministic(t *testing.T) {
	for _, opts := range []flood.ScenarioOptions{
		{Seed: 1},
		{Seed: 42, Households: 30, Ticks: 8},
		{Seed: -7, Households: 1, Ticks: 1},
	} {
		a, err := flood.NewScenario(opts)
		require.NoError(t, err)
		b, err := flood.NewScenario(opts)
		require.NoError(t, err)
		require.Equal(t, a, b, "seed %d", opts.Seed)
	}
	a, err := flood.NewScenario(flood.ScenarioOptions{Seed: 1})
	require.NoError(t, err)
	b, err := flood.NewScenario(flood.ScenarioOptions{Seed: 2})
	require.NoError(t, err)
	require.NotEqual(t, a.Needs, b.Needs, "another seed, another scenario")
}

func TestScenarioDefaults(t *testing.T) {
	s, err := flood.NewScenario(flood.ScenarioOptions{Seed: 1})
	require.NoError(t, err)
	require.Equal(t, flood.DefaultHouseholds, s.Options.Households)
	require.Equal(t, flood.DefaultTicks, s.Options.Ticks)
	require.Len(t, s.Homes, flood.DefaultHouseholds)
	require.Len(t, s.Needs, flood.DefaultTicks)
	require.Nil(t, s.NeedsAt(0))
	require.Nil(t, s.NeedsAt(flood.DefaultTicks+1))
	require.NotEmpty(t, s.NeedsAt(1), "the first tick always floods")
}

// TestScenarioShape checks that a scenario holds what the simulation needs
// to show every outcome, and that its needs are well formed.
func TestScenarioShape(t *testing.T) {
	for _, opts := range []flood.ScenarioOptions{{Seed: 1}, {Seed: 2}, {Seed: 3, Households: 40, Ticks: 10}} {
		s, err := flood.NewScenario(opts)
		require.NoError(t, err)
		count := s.Count()
		for _, typ := range []string{flood.Subsidy, flood.Insurance, flood.Elevation} {
			require.Positive(t, count[typ], "seed %d: no %s needs", opts.Seed, typ)
		}
		e := s.Expected
		require.Positive(t, e.BelowDeductible, "seed %d", opts.Seed)
		require.Positive(t, e.Unsuitable, "seed %d", opts.Seed)
		require.Positive(t, e.Slow, "seed %d", opts.Seed)
		require.GreaterOrEqual(t, s.GovernmentBudget, e.GovernmentDemand/2)
		require.Less(t, s.GovernmentBudget, e.GovernmentDemand, "the budget runs out partway")
		requireEarlyFailures(t, s)
		require.Greater(t, s.InsurerFund, e.Payouts, "the fund pays every claim")

		homes := map[string]flood.Home{}
		for _, h := range s.Homes {
			homes[h.ID] = h
		}
		elevations := map[string]int{}
		for tick := 1; tick <= s.Options.Ticks; tick++ {
			for _, n := range s.NeedsAt(tick) {
				require.Equal(t, tick, n.Tick)
				h, ok := homes[n.Household]
				require.True(t, ok, "need for unknown household %s", n.Household)
				c := n.Context()
				id, err := c.String(flood.KeyHousehold)
				require.NoError(t, err)
				require.Equal(t, n.Household, id)
				switch n.Saga {
				case flood.Insurance:
					require.True(t, h.Insured)
					require.Positive(t, n.Damage)
					require.Equal(t, h.Deductible, n.Deductible)
				case flood.Subsidy:
					require.Equal(t, flood.DefaultSubsidyCost, n.SubsidyCost)
				case flood.Elevation:
					elevations[n.Household]++
					require.Positive(t, n.ContractorTicks)
					require.Equal(t, h.Unsuitable, n.Site == flood.SiteUnsuitable)
					ct, err := c.Int64(flood.KeyContractorTicks)
					require.NoError(t, err)
					require.Equal(t, n.ContractorTicks, ct)
				default:
					t.Fatalf("unknown saga %q", n.Saga)
				}
			}
		}
		for h, n := range elevations {
			require.Equal(t, 1, n, "household %s asks for elevation once", h)
		}
	}
}

func TestScenarioOptionsValidate(t *testing.T) {
	_, err := flood.NewScenario(flood.ScenarioOptions{Households: -1})
	require.Error(t, err)
	_, err = flood.NewScenario(flood.ScenarioOptions{Ticks: 1_000_000})
	require.Error(t, err)
}

// requireEarlyFailures checks that the elevations up to the tick of the
// second one include one on an unsuitable site and one with a slow
// contractor, and that the budget pays every government need up to that
// tick, so that neither is refused for want of budget first.
func requireEarlyFailures(t *testing.T, s *flood.Scenario) {
	t.Helper()
	var early []flood.Need
	var cost int64
	for tick := 1; tick <= s.Options.Ticks && len(early) < 2; tick++ {
		for _, n := range s.NeedsAt(tick) {
			switch n.Saga {
			case flood.Elevation:
				early = append(early, n)
				cost += n.ElevationCost
			case flood.Subsidy:
				cost += n.SubsidyCost
			}
		}
	}
	require.GreaterOrEqual(t, len(early), 2)
	require.GreaterOrEqual(t, s.GovernmentBudget, cost, "the budget pays for the early needs")
	var unsuitable, slow bool
	for _, n := range early {
		unsuitable = unsuitable || (n.Site == flood.SiteUnsuitable && n.ContractorTicks < flood.SlowContractorTicks)
		slow = slow || (n.Site == flood.SiteSuitable && n.ContractorTicks >= flood.SlowContractorTicks)
	}
	require.True(t, unsuitable, "an early elevation on an unsuitable site")
	require.True(t, slow, "an early elevation with a slow contractor")
}

func TestScenarioSizeBounded(t *testing.T) {
	require.NoError(t, flood.ScenarioOptions{Households: 100_000, Ticks: 100}.Validate())
	require.ErrorContains(t, flood.ScenarioOptions{Households: 100_000, Ticks: 101}.Validate(),
		"100000 households for 101 ticks: want at most 10000000 households times ticks")
	// The defaults count: 200 households.
	require.ErrorContains(t, flood.ScenarioOptions{Ticks: 50_001}.Validate(), "200 households for 50001 ticks")
}
