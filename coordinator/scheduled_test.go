package coordinator_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// schedule starts the ranked transfer id, scheduled for tick.
func schedule(t *testing.T, url, id string, rank, tick int64) {
	t.Helper()
	var resp messages.StartResponse
	testenv.Request(t, testenv.Connect(t, url), messages.StartSubject("transfer"),
		messages.StartRequest{V: messages.Version, SagaID: id, Rank: rank, Tick: tick, Context: messages.Context{}}, &resp)
	require.Nil(t, resp.Error)
	require.Equal(t, string(saga.Pending), resp.Status)
}

// debitStep is the bank's debit of a transfer: it answers at once, with
// debited 5.
var debitStep = agent.Step{Saga: "transfer", Name: "debit", Handler: agent.Handler{
	Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
		return messages.Context{}.MustSet("debited", 5), nil
	},
	Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
}}

// bank serves twoSteps: the debit at once, the credit once credit is
// closed; crediting hears of each credit that began.
func bank(t *testing.T, url string, crediting chan<- string, credit <-chan struct{}) {
	t.Helper()
	testenv.Agent(t, url, participant.Options{Role: "bank", AckWait: time.Minute, Steps: []agent.Step{
		debitStep,
		{Saga: "transfer", Name: "credit", Handler: agent.Handler{
			Execute: func(ctx context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				crediting <- cmd.SagaID
				select {
				case <-credit:
					return messages.Context{}, nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}},
	}})
}

// bankRig is a server with the bank agent serving twoSteps, and the saga
// bucket's writes recorded.
type bankRig struct {
	url       string
	nc        *nats.Conn
	stores    *wire
	crediting chan string
	credit    chan struct{}
}

func newBankRig(t *testing.T) *bankRig {
	t.Helper()
	_, url := testenv.Server(t)
	r := &bankRig{url: url, nc: testenv.Connect(t, url), crediting: make(chan string, 8), credit: make(chan struct{})}
	r.stores = listenStores(t, r.nc)
	bank(t, url, r.crediting, r.credit)
	// Cleanups run last first: the credits return before their agent stops.
	t.Cleanup(r.letCredit)
	return r
}

// letCredit lets every credit return, now and from now on.
func (r *bankRig) letCredit() {
	select {
	case <-r.credit:
	default:
		close(r.credit)
	}
}

// awaitCredits waits until n credits began.
func (r *bankRig) awaitCredits(t *testing.T, n int) {
	t.Helper()
	for range n {
		select {
		case <-r.crediting:
		case <-time.After(10 * time.Second):
			t.Fatal("the credits never began")
		}
	}
}

// TestScheduledStartStoredOnce: a scheduled saga is stored pending when it
// is scheduled, and not again when its tick begins it: the clock, stored
// with the tick's first round, says how it began.
func TestScheduledStartStoredOnce(t *testing.T) {
	r := newBankRig(t)
	url, nc, stores := r.url, r.nc, r.stores
	clock := listen(t, nc, messages.BucketSubject(messages.ClockKey))
	r.letCredit()
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})

	schedule(t, url, "a", 1, 1)
	schedule(t, url, "b", 2, 1)
	testenv.Tick(t, nc, 1)
	for _, id := range []string{"a", "b"} {
		testenv.WaitStatus(t, nc, id, saga.Completed)
		require.Eventually(t, func() bool { return stores.states(t, id) == "pending completed" }, 10*time.Second, 5*time.Millisecond,
			"%s: stored when scheduled and when finished, not when it began: %s", id, stores.states(t, id))
	}
	clock.mu.Lock()
	defer clock.mu.Unlock()
	require.Len(t, clock.msgs, 1)
	require.JSONEq(t, `{"tick":1,"round":1}`, string(clock.msgs[0].Data))
}

// TestScheduledStartBegunAgainAfterARestart: a and b began at tick 1 and
// their debits were answered, but neither was stored since it was
// scheduled. The next coordinator finds them pending at the stored tick,
// begins them again in the round the clock names, catches up from the
// debits' records, and they go on from their credits, in the same round.
func TestScheduledStartBegunAgainAfterARestart(t *testing.T) {
	r := newBankRig(t)
	url, nc, stores := r.url, r.nc, r.stores

	stopC1 := runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps}})
	schedule(t, url, "a", 1, 1)
	schedule(t, url, "b", 2, 1)
	testenv.Tick(t, nc, 1)
	r.awaitCredits(t, 2)
	before := map[string]saga.Execution{}
	for _, id := range []string{"a", "b"} {
		before[id] = testenv.Status(t, nc, id)
		require.Equal(t, "pending", stores.states(t, id), "%s: not stored since it was scheduled", id)
	}
	stopC1()

	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	for _, id := range []string{"a", "b"} {
		x := testenv.Status(t, nc, id)
		require.Equal(t, saga.InProgress, x.Status, id)
		require.Equal(t, []string{"debit"}, x.Completed, "%s: caught up from the debit's record", id)
		require.Equal(t, "credit", twoSteps.Steps[x.Current].Name, id)
		require.Equal(t, int64(1), x.StartedTick, id)
		require.Equal(t, before[id].Round, x.Round, "%s: the credit is in the round it was in", id)
		require.Greater(t, x.Seq, before[id].Seq, "%s: numbered past the commands sent before", id)
		require.Equal(t, json.RawMessage("5"), x.Context["debited"], id)
		require.Eventually(t, func() bool { return stores.states(t, id) == "pending in_progress" }, 10*time.Second, 5*time.Millisecond,
			"%s: stored as it began again: %s", id, stores.states(t, id))
	}
	r.letCredit()
	for _, id := range []string{"a", "b"} {
		testenv.WaitStatus(t, nc, id, saga.Completed)
	}
}

// TestBegunSagaStoredWhenTheClockMovesOn: a began at tick 1 and was not
// stored since it was scheduled. Tick 2 is stored with its own first
// round, which says nothing of a's: a is stored as it is then.
func TestBegunSagaStoredWhenTheClockMovesOn(t *testing.T) {
	r := newBankRig(t)
	url, nc, stores := r.url, r.nc, r.stores
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})

	schedule(t, url, "a", 1, 1)
	testenv.Tick(t, nc, 1)
	r.awaitCredits(t, 1)
	require.Equal(t, "pending", stores.states(t, "a"))
	testenv.Tick(t, nc, 2)
	require.Eventually(t, func() bool { return stores.states(t, "a") == "pending in_progress" }, 10*time.Second, 5*time.Millisecond,
		"stored at tick 2: %s", stores.states(t, "a"))
	xs := stores.stored(t, "a")
	require.Equal(t, []string{"debit"}, xs[len(xs)-1].Completed, "as it is now: at its credit")
}
