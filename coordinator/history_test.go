package coordinator_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestRetriesKeepTheSagaStorable retries a step hundreds of times, each
// answer an error with the longest reason a saga keeps, on a server whose
// payload limit is 128 KiB: every retry is in the saga's history, which
// would pass that limit after about a hundred, and the coordinator could
// then store the saga no more (its term ended, again and again, and no
// saga moved). Held to its bound, the history drops its oldest
// transitions, and the saga completes when the step at last succeeds.
func TestRetriesKeepTheSagaStorable(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 131072\n")

	const failures = 300
	def := saga.Definition{Name: "flaky", Subject: "flaky", Steps: []saga.Step{{Name: "try", Role: "ghost",
		Retry: saga.RetryPolicy{MaxAttempts: failures + 1, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	reason := strings.Repeat("r", messages.MaxReason)
	var tries atomic.Int64
	testenv.Agent(t, url, participant.Options{Role: "ghost", Steps: []agent.Step{{Saga: "flaky", Name: "try", Handler: agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			if tries.Add(1) <= failures {
				return nil, errors.New(reason)
			}
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}}}})

	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "flaky", nil)
	x := testenv.WaitStatus(t, nc, id, saga.Completed)
	require.Equal(t, failures+1, x.Attempt)
	require.Positive(t, x.HistoryDropped)
	require.Equal(t, saga.Pending, x.History[0].Status)
	require.Equal(t, saga.Completed, x.History[len(x.History)-1].Status)
}
