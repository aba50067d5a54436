package participant_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// books is the shared value of the property test: a budget, and what each
// saga's actions did to it, net (an execute adds one, a compensation or an
// undo takes one away).
type books struct {
	Budget int            `json:"budget"`
	Net    map[string]int `json:"net"`
}

// TestBarrierUnderRandomDeliveries delivers the commands of many sagas as
// a coordinator and a redelivering server may: each execute one to three
// times, to any of three copies of a role that is not serial, one after
// another or at once, 16 sagas at a time; for half the sagas a
// compensation, before, between or after the executes; handlers failing
// now and then, compensations rejected now and then (and so sent again);
// and runs cut short by their context at any point, as a crash cuts them. In half the seeds
// the compensation gives back to another value than the execute took
// from. Whatever the schedule, the values hold exactly the effects the
// records name, and an execute delivered after its compensation was
// answered is refused.
func TestBarrierUnderRandomDeliveries(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { barrierUnderRandomDeliveries(t, seed) })
	}
}

func barrierUnderRandomDeliveries(t *testing.T, seed uint64) {
	const (
		sagas   = 150
		copies  = 3
		initial = 200 // less than the sagas ask for: some are rejected
	)
	ctx := context.Background()
	_, url := testenv.Server(t)
	var stores []*participant.Store
	for range copies {
		s, err := participant.OpenStore(ctx, testenv.Connect(t, url), bankRole, true, 1)
		require.NoError(t, err)
		stores = append(stores, s)
	}
	refundKey := "books"
	if seed%2 == 1 {
		refundKey = "refunds"
	}
	_, err := stores[0].Init(ctx, "books", books{Budget: initial, Net: map[string]int{}})
	require.NoError(t, err)
	_, err = stores[0].Init(ctx, "refunds", books{Net: map[string]int{}})
	require.NoError(t, err)

	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 1))
	intn := func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		return rng.IntN(n)
	}
	// change moves key's budget by amount, and its net count by step.
	change := func(tx agent.Tx, key string, cmd *messages.Command, step int) error {
		switch intn(20) {
		case 0:
			return errors.New("the handler failed for a moment")
		case 1:
			if step < 0 {
				// A compensation rejected is sent again, until it runs.
				return agent.Reject("not now")
			}
		}
		amount, err := cmd.Context.Int64(keyAmount)
		if err != nil {
			return err
		}
		var b books
		if _, err := tx.Get(key, &b); err != nil {
			return err
		}
		by := -step * int(amount)
		if b.Budget+by < 0 {
			return agent.Reject("the budget has %d", b.Budget)
		}
		b.Budget += by
		b.Net[cmd.SagaID] += step
		return tx.Put(key, b)
	}
	h := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			return messages.Context{}, change(tx, "books", cmd, 1)
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			return change(tx, refundKey, cmd, -1)
		},
	}

	// deliver runs cmd on random copies until a run is answered, as
	// redeliveries and the coordinator's retries would, and returns the
	// verdict it was answered with.
	deliver := func(cmd *messages.Command) agent.Verdict {
		for {
			runCtx, cancel := context.WithCancel(ctx)
			if intn(10) == 0 { // a crash, somewhere in the run
				runCtx, cancel = context.WithTimeout(ctx, time.Duration(intn(3000))*time.Microsecond)
			}
			_, verdict, err := stores[intn(copies)].Do(runCtx, cmd, h)
			cancel()
			if err == nil && verdict != agent.Transient {
				return verdict
			}
		}
	}

	amounts := map[string]int{}
	var wg sync.WaitGroup
	inFlight := make(chan struct{}, 16)
	for i := range sagas {
		id := fmt.Sprintf("s-%03d", i)
		amounts[id] = 1 + intn(5)
		exec := command(id, messages.Execute, 1, int64(amounts[id]))
		comp := command(id, messages.Compensate, 2, int64(amounts[id]))
		executes := 1 + intn(3)
		compAt := -1 // the compensation goes before the execute numbered compAt
		if intn(2) == 0 {
			compAt = intn(executes + 1)
		}
		together := intn(2) == 0 // the deliveries at once, or one after another
		inFlight <- struct{}{}
		wg.Go(func() {
			defer func() { <-inFlight }()
			var (
				inner       sync.WaitGroup
				compensated bool
			)
			run := func(f func()) {
				if together {
					inner.Go(f)
				} else {
					f()
				}
			}
			for n := 0; n <= executes; n++ {
				if n == compAt {
					run(func() {
						v := deliver(comp)
						assert.Contains(t, []agent.Verdict{agent.Applied, agent.Noop, agent.Duplicate}, v, "%s: its compensation", id)
					})
					compensated = !together
				}
				if n < executes {
					after := compensated
					run(func() {
						v := deliver(exec)
						assert.True(t, !after || v == agent.Refused, "%s: an execute after its compensation answered %v", id, v)
					})
				}
			}
			inner.Wait()
		})
	}
	wg.Wait()

	var b, r books
	_, err = stores[0].Get(ctx, "books", &b)
	require.NoError(t, err)
	_, err = stores[0].Get(ctx, "refunds", &r)
	require.NoError(t, err)
	spent := 0
	for id, amount := range amounts {
		rec, _, err := stores[intn(copies)].Branch(ctx, id, "debit")
		require.NoError(t, err)
		took := rec.Execute.Done() && rec.Execute.Outcome == messages.OK
		gaveBack := rec.Compensate.Done() && !rec.Compensate.Noop
		require.False(t, gaveBack && !took, "%s: a compensation ran for an execute that took nothing", id)
		want := 0
		if took && !gaveBack {
			want = 1
		}
		// An undo gives back through the compensation, to refundKey.
		require.Contains(t, []int{0, 1}, b.Net[id], "%s: executes applied", id)
		require.Contains(t, []int{0, -1}, r.Net[id], "%s: given back", id)
		require.Equal(t, want, b.Net[id]+r.Net[id], "%s: the effects against the record %s", id, jsonOf(t, rec))
		spent += want * amount
	}
	require.Equal(t, initial-spent, b.Budget+r.Budget)
}
