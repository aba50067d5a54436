package coordinator

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNotReadySaysWhyTheTermEnded: while terms set up again, Health says
// what ended the last term that was ready, and the last set-up that
// failed since, not only the latter.
func TestNotReadySaysWhyTheTermEnded(t *testing.T) {
	lost, timeout, refused := errors.New("coordinator lease lost"), errors.New("context deadline exceeded"), errors.New("no responders")
	var e *endedTerms
	require.EqualError(t, e.notReady(), "coordinator not ready: setting up streams and bucket")
	e = e.next(timeout, false)
	require.EqualError(t, e.notReady(), "coordinator not ready: setting up streams and bucket: the last attempt failed: context deadline exceeded")
	e = e.next(lost, true)
	require.EqualError(t, e.notReady(), "coordinator not ready: setting up streams and bucket again, after a term that ended: coordinator lease lost")
	e = e.next(timeout, false)
	e = e.next(refused, false)
	err := e.notReady()
	require.EqualError(t, err, "coordinator not ready: setting up streams and bucket again, after a term that ended: coordinator lease lost; the last set-up failed: no responders")
	require.ErrorIs(t, err, ErrNotReady)
	require.ErrorIs(t, err, lost)
	require.ErrorIs(t, err, refused)
}
