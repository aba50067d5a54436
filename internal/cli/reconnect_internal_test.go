package cli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReconnectLogSpacesWarnings: of an outage's failed reconnect attempts,
// 250 ms apart, the first is logged, then one every reconnectLogEvery; a
// reconnection ends the outage, and the next one's first attempt is
// logged again.
func TestReconnectLogSpacesWarnings(t *testing.T) {
	var r reconnectLog
	start := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	var logged []int
	for i := range 100 { // 25 s of attempts
		if n, ok := r.failed(start.Add(time.Duration(i) * 250 * time.Millisecond)); ok {
			logged = append(logged, n)
		}
	}
	require.Equal(t, []int{1, 41, 81}, logged, "at 0 s, 10 s and 20 s")
	require.Equal(t, 101, r.reconnected(), "the attempt that reconnected counts")

	n, ok := r.failed(start.Add(26 * time.Second))
	require.True(t, ok, "a new outage's first attempt")
	require.Equal(t, 1, n)
}
