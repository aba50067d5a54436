package coordinator_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// endings counts the sagas the coordinator reports finished, retried and
// aborted.
type endings struct {
	mu       sync.Mutex
	finished map[string]int
	retried  int
	aborted  int
}

func (e *endings) Committed(_ []messages.Command, events []messages.Event, _ messages.Summary) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range events {
		if saga.Status(ev.Status).Terminal() {
			e.finished[ev.Status]++
		}
	}
}

func (e *endings) Answered(messages.Command, messages.Outcome, int64, time.Duration) {}

func (e *endings) Retried(sagaType string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sagaType == "job" {
		e.retried++
	}
}

func (e *endings) Aborted(sagaType string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if sagaType == "job" {
		e.aborted++
	}
}

func (e *endings) abortedCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.aborted
}

func (e *endings) counts() (map[string]int, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.finished {
		out[k] = v
	}
	return out, e.retried
}

// jobSaga is the saga "job": its step "finish" always rejects, so
// "prepare" is compensated, tried attempts times before the saga fails.
func jobSaga(attempts int) saga.Definition {
	return saga.Definition{Name: "job", Subject: "job", Steps: []saga.Step{{Name: "prepare", Role: "worker"}, {Name: "finish", Role: "worker"}},
		CompensationRetry: saga.RetryPolicy{MaxAttempts: attempts, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}}
}

// jobWorker runs the agent of jobSaga's role: its compensation fails
// until the flag it returns is set.
func jobWorker(t *testing.T, url string) *atomic.Bool {
	t.Helper()
	undoable := new(atomic.Bool)
	h := agent.Handler{
		Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
			if cmd.Step == "finish" {
				return nil, agent.Reject("not today")
			}
			return messages.Context{}, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error {
			if !undoable.Load() {
				return errors.New("cannot undo yet")
			}
			return nil
		},
	}
	testenv.Agent(t, url, participant.Options{Role: "worker", Steps: []agent.Step{{Saga: "job", Name: "prepare", Handler: h}, {Saga: "job", Name: "finish", Handler: h}}})
	return undoable
}

// TestRetriedSagaFinishesAgain: a saga whose compensation fails ends
// failed; an operator's retry sends it back to compensating, which the
// observer is told once stored, and it finishes again: the sagas finished
// are the sagas started and retried.
func TestRetriedSagaFinishesAgain(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	obs := &endings{finished: map[string]int{}}
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{jobSaga(2)}, Observer: obs})
	undoable := jobWorker(t, url)
	id := testenv.Start(t, nc, "job", messages.Context{})
	testenv.WaitStatus(t, nc, id, saga.Failed)

	retry := func() {
		t.Helper()
		var resp messages.RetryResponse
		testenv.Request(t, nc, messages.RetrySubject, messages.RetryRequest{V: messages.Version, SagaID: id}, &resp)
		require.Nil(t, resp.Error)
	}
	retry() // fails again
	require.Eventually(t, func() bool { f, _ := obs.counts(); return f[string(saga.Failed)] == 2 }, 10*time.Second, 5*time.Millisecond)
	undoable.Store(true)
	retry()
	testenv.WaitStatus(t, nc, id, saga.RolledBack)
	require.Eventually(t, func() bool {
		f, r := obs.counts()
		return r == 2 && f[string(saga.RolledBack)] == 1 && f[string(saga.Failed)] == 2
	}, 10*time.Second, 5*time.Millisecond, "1 started + 2 retried = 3 finished")
}

// TestCoordinatorRunsOnce: a second Run of one coordinator is refused at
// once, while the first runs and after it returned.
func TestCoordinatorRunsOnce(t *testing.T) {
	_, url := testenv.Server(t)
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: []saga.Definition{twoSteps}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Ready()
	require.ErrorIs(t, c.Run(context.Background()), coordinator.ErrRanBefore, "while the first runs")
	cancel()
	require.NoError(t, <-done)
	require.ErrorIs(t, c.Run(context.Background()), coordinator.ErrRanBefore, "after")
}
