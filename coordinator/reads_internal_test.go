package coordinator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestReadError: a read of the bucket cut short says why: the term ended,
// or the read ran out of the time it is allowed, most likely for a
// permission the server refused when it did.
func TestReadError(t *testing.T) {
	other := errors.New("stream not found")
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	late, cancelLate := context.WithTimeout(context.Background(), -time.Second)
	defer cancelLate()

	require.ErrorIs(t, readError(ended, context.Canceled, nil, false), errTermEnded)
	err := readError(late, context.DeadlineExceeded, nil, false)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "took longer than the coordinator allows")
	require.Equal(t, other, readError(context.Background(), other, nil, false))

	// A request the server refused times out: the refusal is named.
	refused := fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Publish to "$JS.API.STREAM.INFO.KV_natsaga_sagas"`)
	err = readError(late, context.DeadlineExceeded, refused, false)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, `the server last refused the coordinator "nats: permissions violation: Permissions Violation for Publish to \"$JS.API.STREAM.INFO.KV_natsaga_sagas\"": check its permissions`)
	require.ErrorContains(t, readError(late, context.DeadlineExceeded, errors.New("slow consumer"), false), "took longer")

	// Past its deadline with the lease run out by the clock (a process
	// woken from a stop longer than the lease): the term is over, busy.
	require.ErrorIs(t, readError(late, context.DeadlineExceeded, refused, true), errTermEnded)
	require.Equal(t, other, readError(context.Background(), other, nil, true), "a read that failed in time says why")
}
