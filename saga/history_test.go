package saga_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestHistoryHeldToItsBounds retries a step, then its compensation, far
// more often than a history holds, each time with the longest reason an
// agent may give, made of characters JSON writes six bytes long. The
// history stays within its bounds, in bytes as encoding/json writes it;
// the first transition, the one saying why the saga rolled back and the
// latest are kept; and the dropped ones are counted.
func TestHistoryHeldToItsBounds(t *testing.T) {
	const limit = 64 << 10 // the engine's context bound, and so its history's
	retry := saga.RetryPolicy{MaxAttempts: 1 << 20, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}
	h := newHarnessWith(t, saga.Options{MaxContext: limit}, subsidyDef(func(d *saga.Definition) {
		d.Steps[1].Retry = retry
		d.CompensationRetry = retry
	}))
	id, err := h.start("", "subsidy", nil)
	require.NoError(t, err)
	require.NoError(t, h.reply(h.last(id), messages.OK, "", nil))

	reason := strings.Repeat("\x01", messages.MaxReason)
	recorded := 3 // pending, in progress, the first step's command
	bounded := func(x saga.Execution) {
		t.Helper()
		data, err := json.Marshal(x.History)
		require.NoError(t, err)
		require.LessOrEqual(t, len(data), limit)
		require.LessOrEqual(t, len(x.History), saga.MaxHistory)
		require.Equal(t, saga.Transition{Tick: 0, Status: saga.Pending}, x.History[0], "the first transition is kept")
		require.Equal(t, recorded, len(x.History)+x.HistoryDropped, "every dropped transition is counted")
	}
	at := t0
	fails := func(n int) {
		for range n {
			require.NoError(t, h.reply(h.last(id), messages.Error, reason, nil))
			at = at.Add(time.Millisecond)
			h.wake(at)
			recorded += 2 // the retry scheduled, and its command sent
		}
	}
	recorded++ // the second step's command
	fails(3000)
	x := h.get(id)
	bounded(x)
	require.Positive(t, x.HistoryDropped)
	last := x.History[len(x.History)-1]
	require.Equal(t, eval, last.Step, "the latest transition is kept")
	require.Equal(t, 3001, last.Attempt)

	// The step fails: the saga rolls back, and its compensation is
	// retried as often. Why it rolled back stays in its history.
	require.NoError(t, h.reply(h.last(id), messages.Failed, "not eligible", nil))
	recorded += 2 // compensating, the compensation's command
	fails(3000)
	x = h.get(id)
	bounded(x)
	require.Equal(t, saga.Compensating, x.Status)
	var cause []saga.Transition
	for _, tr := range x.History {
		if tr.Status == saga.Compensating && tr.Step == "" {
			cause = append(cause, tr)
		}
	}
	require.Len(t, cause, 1)
	require.Contains(t, cause[0].Note, "not eligible")

	// Stored and read back, the saga holds what it held.
	data, err := json.Marshal(x)
	require.NoError(t, err)
	var back saga.Execution
	require.NoError(t, json.Unmarshal(data, &back))
	require.Equal(t, x.HistoryDropped, back.HistoryDropped)
	require.Contains(t, string(data), `"history_dropped":`)
}
