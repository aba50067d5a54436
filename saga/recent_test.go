package saga_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

var oneStep = saga.Definition{Name: "one", Subject: "one", Steps: []saga.Step{{Name: "only", Role: "r"}}}

// finishOne starts saga id and completes it.
func finishOne(t *testing.T, e *saga.Engine, id saga.ID) {
	t.Helper()
	var out saga.Outbox
	_, err := e.Start(id, "one", nil, &out)
	require.NoError(t, err)
	require.Len(t, out.Commands, 1)
	r := messages.ReplyTo(&out.Commands[0], messages.OK, "")
	require.NoError(t, e.ApplyReply(r, time.Time{}, &out))
	x := out.Changed[len(out.Changed)-1]
	require.Equal(t, saga.Completed, x.Status)
}

// TestStartOfARecentlyFinishedSaga checks that a retried start of a saga
// that has just finished, and is no longer held, is refused rather than run
// a second time, for as long as the engine remembers the id.
func TestStartOfARecentlyFinishedSaga(t *testing.T) {
	e := saga.New(saga.Options{RecentlyFinished: 2})
	require.NoError(t, e.Register(oneStep))
	finishOne(t, e, "a")

	var out saga.Outbox
	_, err := e.Start("a", "one", nil, &out)
	require.ErrorIs(t, err, saga.ErrTerminal)
	require.Empty(t, out.Commands)
	_, err = e.Get("a")
	require.ErrorIs(t, err, saga.ErrUnknownSaga, "a finished saga is not held")

	// Two more finish: "a" falls out of the engine's memory, and is the
	// runtime's to recognise from its store.
	finishOne(t, e, "b")
	finishOne(t, e, "c")
	x, err := e.Start("a", "one", nil, &out)
	require.NoError(t, err)
	require.Equal(t, saga.InProgress, x.Status)
	require.Equal(t, 3, e.Summary().Completed)
}

// TestSummaryCountsRetrying checks that a saga waiting out a retry backoff
// is counted as retrying, not awaiting, until its command is resent.
func TestSummaryCountsRetrying(t *testing.T) {
	e := saga.New(saga.Options{})
	require.NoError(t, e.Register(oneStep))
	var out saga.Outbox
	_, err := e.Start("a", "one", nil, &out)
	require.NoError(t, err)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, e.ApplyReply(messages.ReplyTo(&out.Commands[0], messages.Error, "flaky"), now, &out))
	s := e.Summary()
	require.Equal(t, 0, s.Awaiting)
	require.Equal(t, 1, s.Retrying)

	at, ok := e.NextWake()
	require.True(t, ok)
	out.Reset()
	e.Wake(at, &out)
	require.Len(t, out.Commands, 1)
	require.Equal(t, 2, out.Commands[0].Attempt)
	s = e.Summary()
	require.Equal(t, 1, s.Awaiting)
	require.Equal(t, 0, s.Retrying)

	// A timeout while waiting to retry rolls back and stops the wait.
	require.NoError(t, e.ApplyReply(messages.ReplyTo(&out.Commands[0], messages.Error, "flaky"), at, &out))
	require.Equal(t, 1, e.Summary().Retrying)
	out.Reset()
	e.AdvanceTick(2, &out)
	require.Equal(t, []saga.ID{"a"}, out.Expired)
	require.Equal(t, 0, e.Summary().Retrying)
}

// TestNegativeRecentlyFinished: a negative count is the default, not a
// panic.
func TestNegativeRecentlyFinished(t *testing.T) {
	require.NotPanics(t, func() { saga.New(saga.Options{RecentlyFinished: -1}) })
}
