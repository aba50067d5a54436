package participant

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/messages"
)

// The batch tests drive Store.runBatch directly: a till's budget, commands
// that check it (reading only) and commands that spend from it (writing),
// the way a serial government role does.

const till = "till"

// check passes when the budget covers the command's amount; it writes
// nothing.
var check = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		var budget int
		if _, err := tx.Get("budget", &budget); err != nil {
			return nil, err
		}
		if budget < amount(cmd) {
			return nil, agent.Reject("budget %d short of %d", budget, amount(cmd))
		}
		return messages.Context{"seen": json.RawMessage(fmt.Sprint(budget))}, nil
	},
	Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
}

// spend takes the command's amount from the budget, or rejects it.
var spend = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		var budget int
		if _, err := tx.Get("budget", &budget); err != nil {
			return nil, err
		}
		if budget < amount(cmd) {
			return nil, agent.Reject("budget %d short of %d", budget, amount(cmd))
		}
		return messages.Context{"left": json.RawMessage(fmt.Sprint(budget - amount(cmd)))}, tx.Put("budget", budget-amount(cmd))
	},
	Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
}

func amount(cmd *messages.Command) int {
	var n int
	_ = json.Unmarshal(cmd.Context["amount"], &n)
	return n
}

// tillItems are checks and spends of 30 each against a budget of 100, in
// this order: the fourth spend, and the checks after the third, fall short.
func tillItems() []*batchItem {
	var items []*batchItem
	for i, step := range []string{"check", "spend", "spend", "check", "spend", "check", "spend", "check"} {
		h := check
		if step == "spend" {
			h = spend
		}
		cmd := &messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%d", i), Saga: "pay", Step: step,
			Action: messages.Execute, Attempt: 1, Seq: 1, Context: messages.Context{"amount": json.RawMessage("30")}}
		items = append(items, &batchItem{cmd: cmd, h: h, op: cmd.SagaID + "/" + step + "/execute"})
	}
	return items
}

// alone runs items one by one through Store.Do, as a serial copy does
// without batches, and returns each one's recorded result.
func alone(t *testing.T, s *Store, items []*batchItem) {
	t.Helper()
	for _, it := range items {
		_, verdict, err := s.Do(context.Background(), it.cmd, it.h)
		require.NoError(t, err)
		require.Contains(t, []agent.Verdict{agent.Applied, agent.Duplicate}, verdict, it.op)
	}
}

func openTill(t *testing.T) *Store {
	t.Helper()
	s, err := OpenStore(context.Background(), connectEmbedded(t), till, true, 1)
	require.NoError(t, err)
	_, err = s.Init(context.Background(), "budget", 100)
	require.NoError(t, err)
	return s
}

// outcomes are the recorded results of items, and the budget.
func outcomes(t *testing.T, s *Store, items []*batchItem) ([]string, int) {
	t.Helper()
	var got []string
	for _, it := range items {
		rec, _, err := s.Branch(context.Background(), it.cmd.SagaID, it.cmd.Step)
		require.NoError(t, err)
		require.True(t, rec.Execute.Done(), "%s: no final result", it.op)
		got = append(got, fmt.Sprintf("%s %s %s %s", it.op, rec.Execute.Outcome, rec.Execute.Reason, rec.Execute.Output))
	}
	var budget int
	_, err := s.Get(context.Background(), "budget", &budget)
	require.NoError(t, err)
	return got, budget
}

// expected is what the till's commands record run one by one on a store of
// their own, as a serial copy runs them without batches: what every batch
// must record too.
type expected struct {
	store   *Store
	results []string
	budget  int
}

func reference(t *testing.T) expected {
	t.Helper()
	s := openTill(t)
	alone(t, s, tillItems())
	results, budget := outcomes(t, s, tillItems())
	require.Equal(t, 10, budget, "three spends of 30 from 100")
	return expected{store: s, results: results, budget: budget}
}

// check requires that s recorded what the commands alone record.
func (e expected) check(t *testing.T, s *Store) {
	t.Helper()
	results, budget := outcomes(t, s, tillItems())
	require.Equal(t, e.results, results)
	require.Equal(t, e.budget, budget)
}

func TestBatchRecordsWhatCommandsAloneWould(t *testing.T) {
	ref := reference(t)

	s := openTill(t)
	items := tillItems()
	require.Equal(t, len(items), s.runBatch(context.Background(), items))
	for _, it := range items {
		require.True(t, it.answered, it.op)
	}
	ref.check(t, s)
	env, _, err := s.readEnvelope(context.Background(), messages.DataSubject(till, "budget"))
	require.NoError(t, err)
	require.Len(t, env.Ops, 3, "the value names the batch's three spends that wrote it")

	// Run again, as redeliveries: every one is a duplicate, nothing moves.
	alone(t, s, tillItems())
	ref.check(t, s)
}

// TestBatchWhoseValueWriteFails: the value changed under the batch (its
// sequence moved, its content did not), so the batch's one value write is
// refused after the checks' results were stored. Run alone then, as a
// serial copy does, the spends apply, and every result is what the
// commands alone record.
func TestBatchWhoseValueWriteFails(t *testing.T) {
	ref := reference(t)

	s := openTill(t)
	ctx := context.Background()
	// The batch reads the value from the cache, as a pinned copy does.
	warm := &txn{ctx: ctx, store: s, reads: map[string]cached{}}
	var budget int
	_, err := warm.Get("budget", &budget)
	warm.release()
	require.NoError(t, err)
	// The same value written again, behind the cache's back.
	env, _, err := s.readEnvelope(ctx, messages.DataSubject(till, "budget"))
	require.NoError(t, err)
	data, err := json.Marshal(env)
	require.NoError(t, err)
	_, err = s.js.Publish(ctx, messages.DataSubject(till, "budget"), data)
	require.NoError(t, err)

	items := tillItems()
	require.Equal(t, len(items), s.runBatch(ctx, items))
	var left []*batchItem
	for _, it := range items {
		if it.value == nil {
			require.True(t, it.answered, "%s: a command that writes nothing records its result before any write", it.op)
		} else {
			require.False(t, it.answered, "%s: a spend whose write failed is not answered", it.op)
		}
		if !it.answered {
			left = append(left, it)
		}
	}
	alone(t, s, left)
	ref.check(t, s)
}

// TestBatchCutAtACommandAnsweredElsewhere: another copy recorded the fourth
// command already. The batch ends before it; what follows runs alone.
func TestBatchCutAtACommandAnsweredElsewhere(t *testing.T) {
	ref := reference(t)

	s := openTill(t)
	ctx := context.Background()
	items := tillItems()
	// The two before it, then the fourth, alone: as another copy would.
	alone(t, s, items[:2])
	rec, _, err := ref.store.Branch(ctx, items[3].cmd.SagaID, items[3].cmd.Step)
	require.NoError(t, err)
	b := &branch{s: s, cmd: items[3].cmd, key: messages.RecordKey(items[3].cmd.SagaID, items[3].cmd.Step), rec: rec}
	require.NoError(t, b.record(ctx))
	s.forgetAll()

	rest := tillItems()[2:]
	require.Equal(t, 1, s.runBatch(ctx, rest), "the batch ends at the command answered elsewhere")
	require.True(t, rest[0].answered)
	alone(t, s, rest[1:])
	ref.check(t, s)
}

// connectEmbedded starts an embedded server for the test and connects to
// it. The package's own tests cannot use testenv, which imports it.
func connectEmbedded(t testing.TB) *nats.Conn {
	t.Helper()
	ns, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// spendTwice runs two spends alone on s: the second's write drops the
// first from the budget's envelope. It returns the first, and the
// budget's envelope.
func spendTwice(t *testing.T, s *Store) (*batchItem, envelope) {
	t.Helper()
	items := tillItems()
	first, second := items[1], items[2]
	alone(t, s, []*batchItem{first, second})
	env, _, err := s.readEnvelope(context.Background(), messages.DataSubject(till, "budget"))
	require.NoError(t, err)
	require.NotContains(t, env.Ops, first.op)
	return first, env
}

// TestSpendNeverAppliedTwice: a spend recorded, and dropped from the
// budget's envelope by a later write, is delivered again: alone, and in a
// batch. Neither applies it again.
func TestSpendNeverAppliedTwice(t *testing.T) {
	s := openTill(t)
	ctx := context.Background()
	first, _ := spendTwice(t, s)

	_, verdict, err := s.Do(ctx, first.cmd, first.h)
	require.NoError(t, err)
	require.Equal(t, agent.Duplicate, verdict)
	var budget int
	_, err = s.Get(ctx, "budget", &budget)
	require.NoError(t, err)
	require.Equal(t, 40, budget, "the duplicate alone spent nothing")

	again := tillItems()
	batch := []*batchItem{again[1], again[4]}
	ran := s.runBatch(ctx, batch)
	var left []*batchItem
	for _, it := range batch[:ran] {
		if !it.answered {
			left = append(left, it)
		}
	}
	alone(t, s, append(left, batch[ran:]...))
	_, err = s.Get(ctx, "budget", &budget)
	require.NoError(t, err)
	require.Equal(t, 10, budget, "three spends of 30 from 100, each once")
	rec, _, err := s.Branch(ctx, again[4].cmd.SagaID, again[4].cmd.Step)
	require.NoError(t, err)
	require.Equal(t, messages.OK, rec.Execute.Outcome, "the spend after the duplicate found 40 left, not 10")
}

// TestLaggingCopyWaitsForTheRecordsItsValueNames: a copy reads its
// branches from the record log as far as it has read it. Before it writes
// a value, it reads the log up to the sequence the value's envelope names:
// the record of every action whose name a write dropped from the envelope
// is there or before. A copy whose log lags behind the other's, given a
// duplicate of a spend the other recorded, does not spend again.
func TestLaggingCopyWaitsForTheRecordsItsValueNames(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	open := func() *Store {
		nc, err := nats.Connect(ns.ClientURL())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		s, err := OpenStore(context.Background(), nc, till, true, 1)
		require.NoError(t, err)
		_, err = s.records(context.Background())
		require.NoError(t, err)
		t.Cleanup(s.Close)
		return s
	}
	a, b := open(), open()
	ctx := context.Background()
	_, err = a.Init(ctx, "budget", 100)
	require.NoError(t, err)
	release := b.log.Hold()
	defer release()

	first, env := spendTwice(t, a)
	require.Greater(t, env.Records, b.log.Last(), "the envelope names records b has not read")

	held, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, verdict, err := b.Do(held, first.cmd, first.h)
	require.ErrorIs(t, err, ErrUnavailable, "b cannot read the records the value names")
	require.Equal(t, agent.Transient, verdict)
	budget := func() int {
		var v int
		_, err := a.Get(ctx, "budget", &v)
		require.NoError(t, err)
		return v
	}
	require.Equal(t, 40, budget(), "nothing spent again")
	// A serial batch holding the duplicate reads the writers' branches the
	// same way.
	again := tillItems()
	batch, cancel2 := context.WithTimeout(ctx, 3*time.Second)
	defer cancel2()
	require.Zero(t, b.runBatch(batch, []*batchItem{again[1], again[4]}), "the batch stops before its writers' branches are read")
	require.Equal(t, 40, budget(), "nothing spent again")

	release()
	_, verdict, err = b.Do(ctx, first.cmd, first.h)
	require.NoError(t, err)
	require.Equal(t, agent.Duplicate, verdict)
	require.Equal(t, 40, budget())
}

// TestValueReadAgainAfterAnError: a copy that is its role's only writer
// trusts its cache, but not after a handler's error on what it read. A
// value that does not decode (written by hand) fails the step; once it is
// repaired, the next command reads it from the server and runs, where it
// failed on the cached value for as long as the copy lived.
func TestValueReadAgainAfterAnError(t *testing.T) {
	s := openTill(t)
	s.exclusive = true
	ctx := context.Background()
	put := func(value string) {
		t.Helper()
		env, _, err := s.readEnvelope(ctx, messages.DataSubject(till, "budget"))
		require.NoError(t, err)
		env.Value = json.RawMessage(value)
		data, err := json.Marshal(env)
		require.NoError(t, err)
		_, err = s.js.Publish(ctx, messages.DataSubject(till, "budget"), data)
		require.NoError(t, err)
	}
	do := func(id string) messages.Reply {
		t.Helper()
		cmd := &messages.Command{V: messages.Version, SagaID: id, Saga: "pay", Step: "check",
			Action: messages.Execute, Attempt: 1, Seq: 1, Context: messages.Context{"amount": json.RawMessage("30")}}
		reply, _, err := s.Do(ctx, cmd, check)
		require.NoError(t, err)
		return reply
	}

	put(`"not a number"`)
	bad := do("s-1")
	require.Equal(t, messages.Error, bad.Outcome)
	require.Contains(t, bad.Reason, "cannot unmarshal string")
	put(`100`)
	good := do("s-2")
	require.Equal(t, messages.OK, good.Outcome, good.Reason)
	require.JSONEq(t, `100`, string(good.Output["seen"]))
}
