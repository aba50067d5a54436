package client

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

var busy = &messages.WireError{Code: messages.CodeBusy, Message: "the limit of sagas in flight (1) is reached"}

// TestRetryBusySendsAgainUntilNotBusy answers busy three times, then
// conflict: RetryBusy calls four times, waiting at least the doubling
// backoff in between, and returns the conflict.
func TestRetryBusySendsAgainUntilNotBusy(t *testing.T) {
	conflict := &messages.WireError{Code: messages.CodeConflict, Message: "saga exists"}
	answers := []*messages.WireError{busy, busy, busy, conflict}
	var calls []time.Time
	answer, err := retryBusy(context.Background(), nil, func(context.Context) (*messages.WireError, error) {
		calls = append(calls, time.Now())
		return answers[len(calls)-1], nil
	}, nil)
	require.NoError(t, err)
	require.Same(t, conflict, answer)
	require.Len(t, calls, 4)
	for i, want := range []time.Duration{busyBackoff, 2 * busyBackoff, 4 * busyBackoff} {
		require.GreaterOrEqual(t, calls[i+1].Sub(calls[i]), want, "wait %d", i+1)
	}
}

// TestRetryBusyStops returns at once on an answer that is not busy or on
// an error, and with ctx's error, and the busy answer, when ctx ends while
// it waits or while a start sent again is out.
func TestRetryBusyStops(t *testing.T) {
	calls := 0
	answer, err := retryBusy(context.Background(), nil, func(context.Context) (*messages.WireError, error) {
		calls++
		return nil, nil
	}, nil)
	require.NoError(t, err)
	require.Nil(t, answer)
	require.Equal(t, 1, calls)

	lost := errors.New("no answer")
	_, err = retryBusy(context.Background(), nil, func(context.Context) (*messages.WireError, error) { return nil, lost }, nil)
	require.ErrorIs(t, err, lost)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	calls = 0
	answer, err = retryBusy(ctx, nil, func(context.Context) (*messages.WireError, error) {
		calls++
		if calls == 2 {
			cancel() // ends ctx before the second wait
		}
		return busy, nil
	}, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.Same(t, busy, answer)
	require.Equal(t, 2, calls)

	// ctx ends while the start sent again is out: the busy answer before
	// is the last word, not the start cut short.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	calls = 0
	answer, err = retryBusy(ctx, nil, func(ctx context.Context) (*messages.WireError, error) {
		calls++
		if calls == 2 {
			cancel()
			return nil, ctx.Err()
		}
		return busy, nil
	}, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.EqualError(t, err, "busy after 1 attempts: context canceled")
	require.Same(t, busy, answer)
	require.Equal(t, 2, calls)
}

// TestRetryBusyAsksWhetherStuck: after each busy answer it asks stuck,
// and returns stuck's error, with no answer, as soon as it has one.
func TestRetryBusyAsksWhetherStuck(t *testing.T) {
	never := errors.New("never admitted")
	calls, asked := 0, 0
	answer, err := retryBusy(context.Background(), nil, func(context.Context) (*messages.WireError, error) {
		calls++
		return busy, nil
	}, func(context.Context) error {
		asked++
		if asked == 2 {
			return never
		}
		return nil
	})
	require.ErrorIs(t, err, never)
	require.Nil(t, answer)
	require.Equal(t, 2, calls)
	require.Equal(t, 2, asked)
}
