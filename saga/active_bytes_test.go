package saga_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestActiveBytes counts what the active sagas hold, for the coordinator's
// admission by bytes: a saga's context as it starts, its outputs (merged
// into the context and kept as results) and its history; a restored saga
// counts as much; and an ended one nothing.
func TestActiveBytes(t *testing.T) {
	def := subsidyDef(func(d *saga.Definition) { d.CompensationRetry.MaxAttempts = 1 })
	h := newHarness(t, def)
	require.Zero(t, h.e.ActiveBytes())
	big := messages.Context{}.MustSet("pad", strings.Repeat("x", 10_000))
	a, err := h.start("", "subsidy", big)
	require.NoError(t, err)
	held := h.e.ActiveBytes()
	require.GreaterOrEqual(t, held, int64(big.EncodedLen()))
	require.Less(t, held, int64(big.EncodedLen()+1000), "a start counts its context and a short history")

	b, err := h.start("", "subsidy", nil)
	require.NoError(t, err)
	require.Less(t, h.e.ActiveBytes()-held, int64(1000), "a small start counts little")
	held = h.e.ActiveBytes()

	out := messages.Context{}.MustSet("out", strings.Repeat("y", 5_000))
	require.NoError(t, h.reply(h.last(a), messages.OK, "", out))
	require.GreaterOrEqual(t, h.e.ActiveBytes()-held, int64(2*out.EncodedLen()), "an output is held in the context and as a result")

	// Restored, as a coordinator restarting does: counted as much.
	r := saga.New(saga.Options{})
	require.NoError(t, r.Register(def))
	for _, id := range []saga.ID{a, b} {
		require.NoError(t, r.Restore(h.get(id), 0))
	}
	require.InDelta(t, h.e.ActiveBytes(), r.ActiveBytes(), 64)

	// Ended, a saga holds nothing counted; rolled back and failed too.
	for _, step := range []string{eval, deduct} {
		require.Equal(t, step, h.last(a).Step)
		require.NoError(t, h.reply(h.last(a), messages.OK, "", nil))
	}
	require.Equal(t, saga.Completed, h.get(a).Status)
	require.NoError(t, h.reply(h.last(b), messages.OK, "", nil))
	require.NoError(t, h.reply(h.last(b), messages.Failed, "no", nil))
	require.NoError(t, h.reply(h.last(b), messages.Failed, "cannot undo", nil))
	require.Equal(t, saga.Failed, h.get(b).Status)
	require.Zero(t, h.e.ActiveBytes())

	// A failed saga retried is active again, and counted again.
	h.out.Reset()
	require.NoError(t, h.e.RetryCompensation(b, &h.out))
	h.record()
	require.Positive(t, h.e.ActiveBytes())
	require.NoError(t, h.reply(h.last(b), messages.OK, "", nil))
	require.Equal(t, saga.RolledBack, h.get(b).Status)
	require.Zero(t, h.e.ActiveBytes())
}
