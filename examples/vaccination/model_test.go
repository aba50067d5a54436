package vaccination_test

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/examples/vaccination"
	"github.com/natsaga/natsaga/messages"
)

// step returns role's handler of step.
func step(t *testing.T, role, name string) agent.Handler {
	t.Helper()
	steps, err := vaccination.Steps(role)
	require.NoError(t, err)
	for _, s := range steps {
		if s.Name == name {
			return s.Handler
		}
	}
	t.Fatalf("%s serves no %s", role, name)
	return agent.Handler{}
}

func cmd(id, sagaType, stepName string, action messages.Action, ctx messages.Context) *messages.Command {
	return &messages.Command{V: messages.Version, SagaID: id, Saga: sagaType, Step: stepName, Action: action, Attempt: 1, Seq: 1, Context: ctx}
}

// TestDepotHandlersWithoutAServer runs the depot's handlers on the agent
// core's in-memory store: the last dose goes to the first patient, the
// second is refused, and the compensation of a turned-away patient's
// reservation puts the dose back for a later one.
func TestDepotHandlersWithoutAServer(t *testing.T) {
	ctx := context.Background()
	m := agent.NewMemory()
	require.NoError(t, vaccination.InitStock(1)(ctx, m))
	reserve := step(t, vaccination.Depot, "depot_reserves_dose")

	r, _, err := m.Do(ctx, cmd("s1", vaccination.Vaccinate, "depot_reserves_dose", messages.Execute, nil), reserve)
	require.NoError(t, err)
	require.Equal(t, messages.OK, r.Outcome)
	require.Equal(t, `{"dose_reserved":true,"doses_left":0}`, string(mustJSON(t, r.Output)))

	r, _, err = m.Do(ctx, cmd("s2", vaccination.Vaccinate, "depot_reserves_dose", messages.Execute, nil), reserve)
	require.NoError(t, err)
	require.Equal(t, messages.Failed, r.Outcome)
	require.Equal(t, "no dose in stock", r.Reason)

	// s1's patient has a fever: the saga rolls back, the dose returns.
	r, _, err = m.Do(ctx, cmd("s1", vaccination.Vaccinate, "depot_reserves_dose", messages.Compensate, nil), reserve)
	require.NoError(t, err)
	require.Equal(t, messages.OK, r.Outcome)
	var s vaccination.Stock
	_, err = m.Value(vaccination.StockKey, &s)
	require.NoError(t, err)
	require.Equal(t, vaccination.Stock{Initial: 1, Doses: 1}, s)

	// The compensation delivered again changes nothing.
	_, v, err := m.Do(ctx, cmd("s1", vaccination.Vaccinate, "depot_reserves_dose", messages.Compensate, nil), reserve)
	require.NoError(t, err)
	require.Equal(t, agent.Duplicate, v)
	_, err = m.Value(vaccination.StockKey, &s)
	require.NoError(t, err)
	require.Equal(t, int64(1), s.Doses)

	// s2's compensation finds nothing to undo: its execute was refused.
	_, v, err = m.Do(ctx, cmd("s2", vaccination.Vaccinate, "depot_reserves_dose", messages.Compensate, nil), reserve)
	require.NoError(t, err)
	require.Equal(t, agent.Noop, v)
	_, err = m.Value(vaccination.StockKey, &s)
	require.NoError(t, err)
	require.Equal(t, vaccination.Stock{Initial: 1, Doses: 1}, s)
}

func TestClinicTurnsAwayAFever(t *testing.T) {
	ctx := context.Background()
	m := agent.NewMemory()
	give := step(t, vaccination.Clinic, "clinic_vaccinates")
	sctx := messages.Context{}.MustSet(vaccination.KeyPatient, "p-1").MustSet(vaccination.KeyFever, true)
	r, _, err := m.Do(ctx, cmd("s1", vaccination.Vaccinate, "clinic_vaccinates", messages.Execute, sctx), give)
	require.NoError(t, err)
	require.Equal(t, messages.Failed, r.Outcome)
	require.Equal(t, "patient p-1 has a fever", r.Reason)
}

func TestDefinitionsFile(t *testing.T) {
	defs, err := vaccination.Definitions()
	require.NoError(t, err)
	require.Len(t, defs, 2)
	require.Equal(t, []string{vaccination.Patient, vaccination.Depot, vaccination.Clinic}, defs[0].Roles())
}

func mustJSON(t *testing.T, c messages.Context) []byte {
	t.Helper()
	data, err := json.Marshal(c)
	require.NoError(t, err)
	return data
}

// TestDepotStockFlag: the depot program's -stock is a count of doses, not
// negative.
func TestDepotStockFlag(t *testing.T) {
	r, err := vaccination.Program(vaccination.Depot)
	require.NoError(t, err)
	for arg, ok := range map[string]bool{"0": true, "500": true, "-1": false, "x": false, "1.5": false} {
		fs := flag.NewFlagSet("depot", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		r.Flags(fs)
		err := fs.Parse([]string{"-stock", arg})
		require.Equal(t, ok, err == nil, "-stock %s: %v", arg, err)
	}
}
