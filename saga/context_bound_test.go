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

// TestContextDepthBound holds a saga's context to messages.MaxContextDepth
// levels of nesting. A start nested 9,999 deep (the decoders stop at 10,000)
// was accepted; then its status and every list of active sagas went
// unanswered, and a restarted coordinator skipped the saga-log message
// holding it, losing every saga stored with it.
func TestContextDepthBound(t *testing.T) {
	nested := func(depth int) messages.Context { // a context depth levels deep
		v := strings.Repeat(`[`, depth-1) + strings.Repeat(`]`, depth-1)
		if depth == 1 {
			v = `"flat"`
		}
		c := messages.Context{"a": json.RawMessage(v), "s": json.RawMessage(`"[[[{\"[\\\\"`)}
		require.Equal(t, depth, c.Depth())
		return c
	}

	t.Run("a start nested deeper than the bound is refused", func(t *testing.T) {
		h := newHarness(t, subsidyDef())
		_, err := h.start("", "subsidy", nested(messages.MaxContextDepth+1))
		require.ErrorIs(t, err, messages.ErrBadRequest)
		_, err = h.start("", "subsidy", nested(9_999))
		require.ErrorIs(t, err, messages.ErrBadRequest)
		require.Empty(t, h.sent)
		require.Zero(t, h.e.Summary().Active)
		_, err = h.start("", "subsidy", nested(messages.MaxContextDepth))
		require.NoError(t, err)
		_, err = h.start("", "subsidy", nested(1))
		require.NoError(t, err)
		require.Len(t, h.sent, 2)
	})

	t.Run("an output nested deeper rolls the saga back from its step", func(t *testing.T) {
		h := newHarness(t, subsidyDef())
		deep := messages.Context{"deep": json.RawMessage(strings.Repeat(`{"a":`, messages.MaxContextDepth) + `1` + strings.Repeat(`}`, messages.MaxContextDepth))}
		run(t, h, []op{
			started,
			{do: ok(), cmds: cs(ex(eval, 1, 2))},
			{do: okWith(deep), cmds: cs(comp(eval, 1, 3)), events: evs(compensating), status: compensating},
			{do: ok(), cmds: cs(comp(apply, 1, 4))},
			{do: ok(), events: evs(rolledBack), status: rolledBack},
		})
		x := h.get(firstID)
		require.NotContains(t, x.Context, "deep")
		require.Contains(t, x.Error, "nests 1001 deep, limit 1000")
	})
}
