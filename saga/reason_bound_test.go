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

// TestReasonsBounded keeps what a saga holds of its agents' reasons small.
// Each reason was kept whole in the history at every retry: a one-step saga
// with the default retries, whose agent answered "error" eleven times with
// a 120 KB reason (each reply within an eighth of the server's payload
// limit), grew a state of over 1 MiB, which the coordinator could not
// store: its term ended, again and again, and it answered nothing.
func TestReasonsBounded(t *testing.T) {
	def := saga.Definition{Name: "one", Subject: "one", Steps: []saga.Step{{Name: "only", Role: "r"}}}
	h := newHarness(t, def)
	id, err := h.start("", "one", nil)
	require.NoError(t, err)
	long := strings.Repeat("é", 60_000) // 120,000 bytes
	for range saga.DefaultRetry.MaxAttempts + saga.DefaultCompensationRetry.MaxAttempts {
		require.NoError(t, h.reply(h.last(id), messages.Error, long, nil))
		h.wake(h.now.Add(time.Hour))
	}
	x := h.get(id)
	require.Equal(t, saga.Failed, x.Status)
	state, err := json.Marshal(x)
	require.NoError(t, err)
	require.Less(t, len(state), 32<<10, "the saga's state grows with its agent's reasons")
	require.LessOrEqual(t, len(x.Error), messages.MaxReason+64)
	require.Contains(t, x.Error, "(120000 bytes)")
	for _, tr := range x.History {
		require.True(t, json.Valid([]byte(`"`+strings.ReplaceAll(tr.Note, `"`, `\"`)+`"`)))
	}

	require.Equal(t, "short", messages.ClipReason("short"))
	clipped := messages.ClipReason(long)
	require.LessOrEqual(t, len(clipped), messages.MaxReason)
	require.True(t, strings.HasPrefix(long, strings.TrimSuffix(clipped, "… (120000 bytes)")))
}
