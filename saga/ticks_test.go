package saga_test

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestTickJumpLimit moves the clock by the jumps at the edge of
// messages.MaxTickJump and of int64: a jump beyond the limit is refused
// and changes nothing, and the clock moves on after it.
func TestTickJumpLimit(t *testing.T) {
	const jump = messages.MaxTickJump
	for _, tc := range []struct {
		name     string
		from     int64 // the clock, set by earlier ticks
		tick     int64
		refused  bool
		newClock int64
	}{
		{"the largest jump", 0, jump, false, jump},
		{"one beyond", 0, jump + 1, true, 0},
		{"to the int64 edge", 0, math.MaxInt64, true, 0},
		{"from far on, the largest jump", 5 * jump, 6 * jump, false, 6 * jump},
		{"from far on, one beyond", 5 * jump, 6*jump + 1, true, 5 * jump},
		{"backwards", 5, 3, false, 5},
		{"negative", 5, math.MinInt64, false, 5},
		{"the same", 5, 5, false, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := saga.New(saga.Options{})
			var out saga.Outbox
			for at := int64(0); at < tc.from; {
				at = min(at+jump, tc.from)
				require.NoError(t, e.AdvanceTick(at, &out))
			}
			err := e.AdvanceTick(tc.tick, &out)
			if tc.refused {
				require.ErrorIs(t, err, messages.ErrBadRequest)
				require.ErrorContains(t, err, "ahead of the clock")
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, tc.newClock, e.Tick())
			require.NoError(t, e.AdvanceTick(e.Tick()+1, &out), "the clock still moves")
		})
	}
}

// TestDeadlinesAtTheInt64Edge restores sagas whose ticks are near the
// largest int64, as a clock moved there before the jump limit might have
// left them: their deadlines saturate rather than wrap, so nothing times
// out early and each times out when its tick comes.
func TestDeadlinesAtTheInt64Edge(t *testing.T) {
	def := subsidyDef(func(d *saga.Definition) {
		d.Steps[0].TimeoutTicks = math.MaxInt64 // the saga's timeout sums to past the edge
		d.Steps[1].TimeoutTicks = 3
	})
	const edge = math.MaxInt64
	for _, tc := range []struct {
		name       string
		dispatched int64 // when the step in flight was sent
		clock      int64 // the stored clock
		quiet      []int64
		expiresAt  int64
	}{
		// 3 ticks after edge-10, the step times out at edge-6.
		{"below the edge", edge - 10, edge - 10, []int64{edge - 9, edge - 7}, edge - 6},
		// edge-2+3+1 wraps to a negative tick: without saturation the
		// next tick times it out.
		{"past the edge", edge - 2, edge - 2, []int64{edge - 1}, edge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A saga on its second step, as stored.
			src := newHarness(t, def)
			_, err := src.start("edge", "subsidy", nil)
			require.NoError(t, err)
			require.NoError(t, src.reply(src.last("edge"), messages.OK, "", nil))
			x, err := src.e.Get("edge")
			require.NoError(t, err)
			data, err := json.Marshal(x)
			require.NoError(t, err)
			var stored saga.Execution
			require.NoError(t, json.Unmarshal(data, &stored))
			stored.StartedTick, stored.DispatchedTick = tc.dispatched, tc.dispatched

			e := saga.New(saga.Options{})
			require.NoError(t, e.Register(def))
			require.NoError(t, e.Restore(stored, tc.clock))
			var out saga.Outbox
			for _, tick := range tc.quiet {
				require.NoError(t, e.AdvanceTick(tick, &out))
				require.Empty(t, out.Expired, "timed out early at %d", tick)
			}
			require.NoError(t, e.AdvanceTick(tc.expiresAt, &out))
			require.Equal(t, []string{"edge"}, out.Expired)
			require.Equal(t, tc.expiresAt, e.Tick())
			require.Equal(t, messages.Compensate, out.Commands[0].Action, "the rollback starts")
		})
	}
}
