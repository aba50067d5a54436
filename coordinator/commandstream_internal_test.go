package coordinator

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/saga"
)

// TestCheckCommandSubjectsCountsThemAll: definitions given at start that
// take more subjects than the limit are refused with their whole count,
// as a registration of them is, not the count at the first one past it.
func TestCheckCommandSubjectsCountsThemAll(t *testing.T) {
	var defs []saga.Definition
	for i := range 60 {
		d := saga.Definition{Name: fmt.Sprintf("s%d", i), Subject: fmt.Sprintf("s%d", i)}
		for j := range 10 {
			d.Steps = append(d.Steps, saga.Step{Name: fmt.Sprintf("step%d", j), Role: "r"})
		}
		defs = append(defs, d)
	}
	err := checkCommandSubjects(defs)
	require.ErrorIs(t, err, ErrTooManyCommandSubjects)
	require.ErrorContains(t, err, "the command stream would take 1200 subjects, more than its limit of 1024")
	require.NoError(t, checkCommandSubjects(defs[:51]), "51 sagas of 10 steps take 1,020 subjects")
}
