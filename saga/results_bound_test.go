package saga_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestStepResultsBounded holds a saga's context and step results together
// to twice Options.MaxContext. Each step's output was checked only as it
// grew the context: outputs that replace one key kept the context small,
// but the state keeps every output in its step results, so a saga of
// twelve steps answered with 120 KB outputs grew a state over 1 MiB, which
// the coordinator could not store: its term ended again and again, and it
// answered nothing.
func TestStepResultsBounded(t *testing.T) {
	const limit = 1000
	steps := make([]saga.Step, 12)
	for i := range steps {
		steps[i] = saga.Step{Name: fmt.Sprintf("s%d", i), Role: "r"}
	}
	h := newHarnessWith(t, saga.Options{MaxContext: limit}, saga.Definition{Name: "many", Subject: "many", Steps: steps})
	id, err := h.start("", "many", nil)
	require.NoError(t, err)
	for i := 0; ; i++ {
		c := h.last(id)
		if c.Action == messages.Compensate {
			require.Equal(t, "s2", c.Step, "the step whose output passed the bound is compensated first")
			break
		}
		require.Less(t, i, len(steps), "every step ran: the results were not bounded")
		out := messages.Context{}.MustSet("a", strings.Repeat(string(rune('a'+i)), 500))
		require.NoError(t, h.reply(c, messages.OK, "", out))
	}
	for x := h.get(id); x.Status == saga.Compensating; x = h.get(id) {
		require.NoError(t, h.reply(h.last(id), messages.OK, "", nil))
	}
	x := h.get(id)
	require.Equal(t, saga.RolledBack, x.Status)
	require.Contains(t, x.Error, "step s2: its output would make the context and the step results")
	results, err := json.Marshal(x.Results)
	require.NoError(t, err)
	require.LessOrEqual(t, len(results)+x.Context.EncodedLen(), 2*limit)

	t.Run("no bound by default", func(t *testing.T) {
		h := newHarness(t, saga.Definition{Name: "many", Subject: "many", Steps: steps})
		id, err := h.start("", "many", nil)
		require.NoError(t, err)
		for range steps {
			require.NoError(t, h.reply(h.last(id), messages.OK, "", messages.Context{}.MustSet("a", strings.Repeat("x", 500))))
		}
		require.Equal(t, saga.Completed, h.get(id).Status)
	})
}
