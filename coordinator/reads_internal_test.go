package coordinator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReadError: a read of the bucket cut short says why: the term ended,
// or the read ran out of the time it is allowed.
func TestReadError(t *testing.T) {
	other := errors.New("stream not found")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	late, cancelLate := context.WithTimeout(context.Background(), -time.Second)
	defer cancelLate()

	require.ErrorIs(t, readError(ended, context.Canceled), errTermEnded)
	err := readError(late, context.DeadlineExceeded)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "took longer than the coordinator allows")
	require.Equal(t, other, readError(context.Background(), other))
}
