package saga_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestContextBound holds a saga's context to Options.MaxContext: every
// command carries the context, so a saga whose context outgrew an agent's
// limit could neither run its next step nor undo the ones before. A start
// over the bound is refused; a step whose output would grow the context
// past it is compensated with the steps before it, and its output is
// dropped.
func TestContextBound(t *testing.T) {
	const limit = 64
	pad := func(n int) messages.Context {
		c := messages.Context{"pad": json.RawMessage(`"` + strings.Repeat("x", n-len(`{"pad":""}`)) + `"`)}
		require.Equal(t, n, c.EncodedLen())
		return c
	}

	t.Run("a start over the bound is refused", func(t *testing.T) {
		h := newHarnessWith(t, saga.Options{MaxContext: limit}, subsidyDef())
		_, err := h.start("", "subsidy", pad(limit+1))
		require.ErrorIs(t, err, messages.ErrTooLarge)
		require.Empty(t, h.sent)
		require.Zero(t, h.e.Summary().Active)
		_, err = h.start("", "subsidy", pad(limit))
		require.NoError(t, err)
		require.Len(t, h.sent, 1)
	})

	t.Run("an output that would pass it rolls the saga back from its step", func(t *testing.T) {
		h := newHarnessWith(t, saga.Options{MaxContext: limit}, subsidyDef())
		small := messages.Context{}.MustSet("a", "x") // the context becomes 34 bytes
		big := messages.Context{}.MustSet("big", strings.Repeat("y", 30))
		reason := "step government_evaluates: its output would make the context 73 bytes, limit 64"
		run(t, h, []op{
			started,
			{do: okWith(small), cmds: cs(ex(eval, 1, 2))},
			{do: okWith(big), cmds: cs(comp(eval, 1, 3)), events: evs(compensating), status: compensating},
			{do: ok(), cmds: cs(comp(apply, 1, 4))},
			{do: ok(), events: evs(rolledBack), status: rolledBack},
			{do: check(func(h *harness, id saga.ID) {
				x := h.get(id)
				require.Equal(h.t, messages.Context{}.MustSet("agent_id", "household-7").MustSet("a", "x"), x.Context)
				require.Equal(h.t, map[string]messages.Context{apply: small}, x.Results)
				for _, c := range h.sent {
					require.LessOrEqual(h.t, c.Context.EncodedLen(), limit, "%s %s", c.Step, c.Action)
				}
			})},
		})
		final{status: rolledBack, cause: rolledBack, completed: []string{apply}, compensated: []string{eval, apply}, err: reason}.check(t, h.get(firstID))
	})

	t.Run("no bound by default", func(t *testing.T) {
		h := newHarness(t, subsidyDef())
		_, err := h.start("", "subsidy", pad(messages.MaxPayload))
		require.NoError(t, err)
	})
}
