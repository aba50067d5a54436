package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

const (
	bankRole   = "bank"
	balanceKey = "balance"
	keyAmount  = "amount"
)

// debit is a handler that takes the context's amount from the balance and
// gives it back on compensation. It counts its calls and remembers the
// lowest balance it ever read.
type debit struct {
	executes, compensates atomic.Int64
	lowest                atomic.Int64
	failNext              atomic.Bool
}

func newDebit() *debit {
	d := &debit{}
	d.lowest.Store(1 << 62)
	return d
}

func (d *debit) read(tx agent.Tx) (int64, error) {
	var bal int64
	ok, err := tx.Get(balanceKey, &bal)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errors.New("no balance")
	}
	for {
		low := d.lowest.Load()
		if bal >= low || d.lowest.CompareAndSwap(low, bal) {
			return bal, nil
		}
	}
}

func (d *debit) handler() agent.Handler {
	return agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			d.executes.Add(1)
			if d.failNext.CompareAndSwap(true, false) {
				return nil, errors.New("ledger service briefly unavailable")
			}
			amt, err := cmd.Context.Int64(keyAmount)
			if err != nil {
				return nil, agent.Reject("bad amount: %v", err)
			}
			bal, err := d.read(tx)
			if err != nil {
				return nil, err
			}
			if bal < amt {
				return nil, agent.Reject("insufficient balance: %d < %d", bal, amt)
			}
			if err := tx.Put(balanceKey, bal-amt); err != nil {
				return nil, err
			}
			return messages.Context{}.MustSet("debited", amt), nil
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			d.compensates.Add(1)
			amt, err := cmd.Context.Int64(keyAmount)
			if err != nil {
				return err
			}
			bal, err := d.read(tx)
			if err != nil {
				return err
			}
			return tx.Put(balanceKey, bal+amt)
		},
	}
}

// openBank returns the bank's store on a new connection to url, with the
// balance opened at initial the first time.
func openBank(t *testing.T, url string, initial int64) *participant.Store {
	t.Helper()
	s, err := participant.OpenStore(context.Background(), testenv.Connect(t, url), bankRole, true, 1)
	require.NoError(t, err)
	_, err = s.Init(context.Background(), balanceKey, initial)
	require.NoError(t, err)
	return s
}

func balance(t *testing.T, s *participant.Store) int64 {
	t.Helper()
	var bal int64
	seq, err := s.Get(context.Background(), balanceKey, &bal)
	require.NoError(t, err)
	require.NotZero(t, seq)
	return bal
}

func command(sagaID string, action messages.Action, seq int, amount int64) *messages.Command {
	return &messages.Command{
		V: messages.Version, SagaID: sagaID, Saga: "payment", Step: "debit", Action: action,
		Attempt: 1, Seq: seq, Context: messages.Context{}.MustSet(keyAmount, amount),
	}
}

func do(t *testing.T, s *participant.Store, h agent.Handler, cmd *messages.Command) (messages.Reply, agent.Verdict) {
	t.Helper()
	reply, verdict, err := s.Do(context.Background(), cmd, h)
	require.NoError(t, err)
	require.NoError(t, reply.Validate())
	require.Equal(t, cmd.SagaID, reply.SagaID)
	require.Equal(t, cmd.Action, reply.Action)
	require.Equal(t, cmd.Seq, reply.Seq, "a reply echoes the command it answers")
	require.Equal(t, cmd.Attempt, reply.Attempt)
	return reply, verdict
}

func TestBarrierRedeliveredCommandsApplyOnce(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 1000)
	d := newDebit()
	h := d.handler()

	cmd := command("s1", messages.Execute, 1, 300)
	first, v := do(t, s, h, cmd)
	require.Equal(t, agent.Applied, v)
	require.Equal(t, messages.OK, first.Outcome)
	require.JSONEq(t, `{"debited":300}`, jsonOf(t, first.Output))
	require.Equal(t, int64(700), balance(t, s))

	// The same command delivered again, and the same step sent again with a
	// later attempt and sequence (as after a coordinator restart): the
	// stored reply, nothing applied.
	again, v := do(t, s, h, cmd)
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, first, again)
	resent := command("s1", messages.Execute, 4, 300)
	resent.Attempt = 2
	reply, v := do(t, s, h, resent)
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, first.Output, reply.Output)
	require.Equal(t, int64(700), balance(t, s), "a duplicate is not applied")

	rec, _, err := s.Branch(context.Background(), "s1", "debit")
	require.NoError(t, err)
	require.Equal(t, 1, rec.Execute.Seq, "the record keeps the command that took effect")
	require.Nil(t, rec.Compensate)

	// Its compensation, twice: undone once.
	comp := command("s1", messages.Compensate, 5, 300)
	reply, v = do(t, s, h, comp)
	require.Equal(t, agent.Applied, v)
	require.Equal(t, messages.OK, reply.Outcome)
	reply, v = do(t, s, h, comp)
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, messages.OK, reply.Outcome)
	require.Equal(t, int64(1), d.compensates.Load(), "a recorded compensation is never run again")
	require.Equal(t, int64(1000), balance(t, s))

	// And a late execute after the compensation is refused.
	reply, v = do(t, s, h, cmd)
	require.Equal(t, agent.Refused, v)
	require.Equal(t, messages.Failed, reply.Outcome)
	require.Equal(t, int64(1000), balance(t, s))
}

// TestBarrierRecordsLetGoAreReadAgain holds one record in memory: the
// record of s1's debit is let go when s2's is written, and read again from
// the server when s1's debit comes again and when it is compensated.
func TestBarrierRecordsLetGoAreReadAgain(t *testing.T) {
	_, url := testenv.Server(t)
	ctx := context.Background()
	s, err := participant.OpenStore(ctx, testenv.Connect(t, url), bankRole, true, 1)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	participant.SetMaxRecordValues(s, 1)
	_, err = s.Init(ctx, balanceKey, int64(1000))
	require.NoError(t, err)
	d := newDebit()
	h := d.handler()

	first, v := do(t, s, h, command("s1", messages.Execute, 1, 300))
	require.Equal(t, agent.Applied, v)
	_, v = do(t, s, h, command("s2", messages.Execute, 1, 100))
	require.Equal(t, agent.Applied, v)
	again, v := do(t, s, h, command("s1", messages.Execute, 1, 300))
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, first, again)
	require.Equal(t, int64(600), balance(t, s))

	comp := command("s1", messages.Compensate, 2, 300)
	_, v = do(t, s, h, comp)
	require.Equal(t, agent.Applied, v)
	_, v = do(t, s, h, command("s2", messages.Compensate, 2, 100))
	require.Equal(t, agent.Applied, v)
	_, v = do(t, s, h, comp)
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, int64(2), d.compensates.Load())
	require.Equal(t, int64(1000), balance(t, s))
}

func TestBarrierCompensationBeforeExecute(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 1000)
	d := newDebit()
	h := d.handler()

	// The compensation overtakes its execute (say the execute timed out
	// and is still in flight): nothing to undo, and that is a success.
	reply, v := do(t, s, h, command("s2", messages.Compensate, 3, 250))
	require.Equal(t, agent.Noop, v)
	require.Equal(t, messages.OK, reply.Outcome)
	require.Equal(t, "nothing to undo", reply.Reason)
	require.Zero(t, d.compensates.Load(), "no compensation handler runs for a step that never ran")
	rec, _, err := s.Branch(context.Background(), "s2", "debit")
	require.NoError(t, err)
	require.Nil(t, rec.Execute)
	require.True(t, rec.Compensate.Noop)

	// Then the execute arrives: refused, with no effect.
	reply, v = do(t, s, h, command("s2", messages.Execute, 2, 250))
	require.Equal(t, agent.Refused, v)
	require.Equal(t, messages.Failed, reply.Outcome)
	require.Contains(t, reply.Reason, "compensation came first")
	require.Equal(t, int64(1000), balance(t, s))
	rec, _, err = s.Branch(context.Background(), "s2", "debit")
	require.NoError(t, err)
	require.Nil(t, rec.Execute, "a refused execute leaves the record as it was")

	// The compensation delivered again: still the recorded no-op.
	reply, v = do(t, s, h, command("s2", messages.Compensate, 3, 250))
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, messages.OK, reply.Outcome)
	require.Equal(t, int64(1000), balance(t, s))
}

// TestBarrierStrayWriteIsUndone: one copy records an execute as rejected
// while another copy's run of it, its log behind, writes the value and
// stops before it can undo the write (its record refused). The write is
// in the value, named by the execute, and no record accounts for it: the
// command delivered again finds it and undoes it, and is answered from
// the record.
func TestBarrierStrayWriteIsUndone(t *testing.T) {
	_, url := testenv.Server(t)
	rejecting, copy := openBank(t, url, 1000), openBank(t, url, 1000)
	d := newDebit()
	// The rejecting copy reads the balance, then refuses: the value it
	// holds stays as it read it.
	refuse := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
			var bal int64
			if _, err := tx.Get(balanceKey, &bal); err != nil {
				return nil, err
			}
			return nil, agent.Reject("the till is closed")
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	cmd := command("s9", messages.Execute, 1, 300)
	reply, v := do(t, rejecting, refuse, cmd)
	require.Equal(t, agent.Applied, v)
	require.Equal(t, messages.Failed, reply.Outcome)

	// The stray write, as the other copy's run left it.
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.Publish(context.Background(), messages.DataSubject(bankRole, balanceKey),
		[]byte(`{"value":700,"ops":{"s9/debit/execute":{"debited":300}}}`))
	require.NoError(t, err)

	reply, v = do(t, copy, d.handler(), cmd)
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, messages.Failed, reply.Outcome)
	require.Equal(t, "the till is closed", reply.Reason)
	require.Equal(t, int64(1000), balance(t, rejecting), "the stray debit is refunded")
	require.Equal(t, int64(1), d.compensates.Load())
	st, err := js.Stream(context.Background(), messages.StateStream(bankRole))
	require.NoError(t, err)
	m, err := st.GetLastMsgForSubject(context.Background(), messages.DataSubject(bankRole, balanceKey))
	require.NoError(t, err)
	require.NotContains(t, string(m.Data), "s9/debit/execute", "the value no longer names the execute")

	// Delivered once more: nothing left to undo.
	reply, v = do(t, copy, d.handler(), cmd)
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, messages.Failed, reply.Outcome)
	require.Equal(t, int64(1000), balance(t, copy))
	require.Equal(t, int64(1), d.compensates.Load())

	// The copy that recorded the rejection holds the value as it read it,
	// before the stray write: run again, its handler debits that value,
	// then finds the rejection recorded. It looks for the stray write on
	// the server, and undoes it.
	cmd = command("s10", messages.Execute, 1, 200)
	reply, v = do(t, rejecting, refuse, cmd)
	require.Equal(t, agent.Applied, v)
	require.Equal(t, messages.Failed, reply.Outcome)
	_, err = js.Publish(context.Background(), messages.DataSubject(bankRole, balanceKey),
		[]byte(`{"value":800,"ops":{"s10/debit/execute":{"debited":200}}}`))
	require.NoError(t, err)
	reply, v = do(t, rejecting, d.handler(), cmd)
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, messages.Failed, reply.Outcome)
	require.Equal(t, int64(1000), balance(t, copy), "the stray debit is refunded")
	require.Equal(t, int64(2), d.compensates.Load())
}

func TestBarrierRejectionAndTransientError(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 100)
	d := newDebit()
	h := d.handler()

	// A business rejection is recorded: a redelivery gets the same answer.
	reply, v := do(t, s, h, command("s3", messages.Execute, 1, 500))
	require.Equal(t, agent.Applied, v)
	require.Equal(t, messages.Failed, reply.Outcome)
	require.Equal(t, "insufficient balance: 100 < 500", reply.Reason)
	again, v := do(t, s, h, command("s3", messages.Execute, 1, 500))
	require.Equal(t, agent.Duplicate, v)
	require.Equal(t, reply, again)
	// A rejected execute took no effect: its compensation has nothing to undo.
	reply, v = do(t, s, h, command("s3", messages.Compensate, 2, 500))
	require.Equal(t, agent.Noop, v)
	require.Equal(t, messages.OK, reply.Outcome)
	require.Zero(t, d.compensates.Load())

	// A transient error is not recorded: the retry runs the step.
	d.failNext.Store(true)
	reply, v = do(t, s, h, command("s4", messages.Execute, 1, 40))
	require.Equal(t, agent.Transient, v)
	require.Equal(t, messages.Error, reply.Outcome)
	_, seq, err := s.Branch(context.Background(), "s4", "debit")
	require.NoError(t, err)
	require.Zero(t, seq, "nothing recorded for a transient error")
	retry := command("s4", messages.Execute, 2, 40)
	retry.Attempt = 2
	reply, v = do(t, s, h, retry)
	require.Equal(t, agent.Applied, v)
	require.Equal(t, messages.OK, reply.Outcome)
	require.Equal(t, int64(60), balance(t, s))
}

// TestBarrierConcurrentSpendsLoseNoUpdate runs two stores on two
// connections, like two copies of an agent, spending from one balance from
// many goroutines at once. Every spend is delivered twice, the second time
// to the other copy, and some are compensated.
func TestBarrierConcurrentSpendsLoseNoUpdate(t *testing.T) {
	const (
		initial    = 1_000
		goroutines = 4 // per store
		perG       = 12
	)
	_, url := testenv.Server(t)
	stores := []*participant.Store{openBank(t, url, initial), openBank(t, url, initial)}
	d := newDebit()
	h := d.handler()

	// Every value of the balance written is seen here, committed or not.
	nc := testenv.Connect(t, url)
	var negative atomic.Int64
	sub, err := nc.Subscribe(messages.DataSubject(bankRole, balanceKey), func(m *nats.Msg) {
		// State values are stored in an envelope: {"value":…,"ops":{…}}.
		var env struct {
			Value *int64 `json:"value"`
		}
		if json.Unmarshal(m.Data, &env) != nil || env.Value == nil || *env.Value < 0 {
			negative.Add(1)
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	var (
		mu                          sync.Mutex
		spent, refunded             int64
		nSpent, nRejected, nRefunds int
		errs                        []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i := range 2 * goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			mine, other := stores[i%2], stores[(i+1)%2]
			for j := range perG {
				id := fmt.Sprintf("g%d-%d", i, j)
				amt := int64(1 + (i*perG+j)*7919%50)
				cmd := command(id, messages.Execute, 1, amt)
				r1, v1, err := mine.Do(ctx, cmd, h)
				if err != nil {
					fail(err)
					return
				}
				r2, v2, err := other.Do(ctx, cmd, h)
				if err != nil {
					fail(err)
					return
				}
				if v1 != agent.Applied || v2 != agent.Duplicate || r1.Outcome != r2.Outcome {
					fail(fmt.Errorf("%s: verdicts %v, %v, outcomes %s, %s", id, v1, v2, r1.Outcome, r2.Outcome))
					return
				}
				mu.Lock()
				if r1.Outcome == messages.OK {
					spent += amt
					nSpent++
				} else {
					nRejected++
				}
				mu.Unlock()
				if j%5 != 0 || r1.Outcome != messages.OK {
					continue
				}
				r3, v3, err := other.Do(ctx, command(id, messages.Compensate, 2, amt), h)
				if err != nil || v3 != agent.Applied || r3.Outcome != messages.OK {
					fail(fmt.Errorf("%s: compensate: %v, %v, %s", id, err, v3, r3.Outcome))
					return
				}
				mu.Lock()
				refunded += amt
				nRefunds++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.NoError(t, nc.Flush())

	t.Logf("%d spends (%d cents), %d rejected, %d refunds (%d cents), %d optimistic retries",
		nSpent, spent, nRejected, nRefunds, refunded, stores[0].Conflicts()+stores[1].Conflicts())
	require.Positive(t, nSpent)
	require.Positive(t, nRejected, "the demand exceeds the balance, so some spends must be rejected")
	final := balance(t, stores[0])
	require.Equal(t, int64(initial)-spent+refunded, final, "an update was lost")
	require.Equal(t, final, balance(t, stores[1]))
	require.GreaterOrEqual(t, final, int64(0))
	require.GreaterOrEqual(t, d.lowest.Load(), int64(0), "a handler saw a negative balance")
	require.Zero(t, negative.Load(), "a negative balance was written")
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestFinalRecordsExpire checks that a branch's record is kept in the
// role's record log, whose messages expire after participant.RecordTTL,
// while the state it changed is not.
func TestFinalRecordsExpire(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 1_000)
	d := newDebit()
	_, v := do(t, s, d.handler(), command("ttl-1", messages.Execute, 1, 10))
	require.Equal(t, agent.Applied, v)

	ctx := context.Background()
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	rs, err := js.Stream(ctx, messages.RecordStream(bankRole))
	require.NoError(t, err)
	require.Equal(t, participant.RecordTTL, rs.CachedInfo().Config.MaxAge)
	m, err := rs.GetLastMsgForSubject(ctx, messages.RecordSubject(bankRole))
	require.NoError(t, err)
	es, err := kvlog.Decode(m.Data)
	require.NoError(t, err)
	require.Len(t, es, 1)
	require.Equal(t, messages.RecordKey("ttl-1", "debit"), es[0].Key)

	st, err := js.Stream(ctx, messages.StateStream(bankRole))
	require.NoError(t, err)
	require.Zero(t, st.CachedInfo().Config.MaxAge, "state never expires")
	val, err := st.GetLastMsgForSubject(ctx, messages.DataSubject(bankRole, balanceKey))
	require.NoError(t, err)
	require.Empty(t, val.Header.Get(jetstream.MsgTTLHeader), "state never expires")
}

// TestBarrierActionWritesOneValue checks that an action writing two state
// values is answered with an error, records nothing and changes nothing.
func TestBarrierActionWritesOneValue(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 100)
	_, err := s.Init(context.Background(), "fees", int64(0))
	require.NoError(t, err)
	h := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
			var bal, fees int64
			if _, err := tx.Get(balanceKey, &bal); err != nil {
				return nil, err
			}
			if _, err := tx.Get("fees", &fees); err != nil {
				return nil, err
			}
			if err := tx.Put(balanceKey, bal-10); err != nil {
				return nil, err
			}
			return nil, tx.Put("fees", fees+1)
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	reply, v := do(t, s, h, command("s9", messages.Execute, 1, 10))
	require.Equal(t, agent.Transient, v)
	require.Equal(t, messages.Error, reply.Outcome)
	require.Contains(t, reply.Reason, participant.ErrTooManyWrites.Error())
	_, seq, err := s.Branch(context.Background(), "s9", "debit")
	require.NoError(t, err)
	require.Zero(t, seq, "nothing recorded")
	require.Equal(t, int64(100), balance(t, s))
}

// TestStoreRefusesBadKeys: a handler reading a key that breaks the key
// rule is answered with an Error naming the rule, as agent.Memory answers
// it, not left to be delivered again as if the store were down; a
// wildcard key reads no other key's value.
func TestStoreRefusesBadKeys(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 100)
	_, err := s.Init(context.Background(), "q.one", 2)
	require.NoError(t, err)
	for i, key := range []string{"a b", "", "q.*", "q.>"} {
		h := agent.Handler{
			Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
				var v int64
				_, err := tx.Get(key, &v)
				return messages.Context{}.MustSet("read", v), err
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}
		reply, v, err := s.Do(context.Background(), command(fmt.Sprintf("bad-key-%d", i), messages.Execute, 1, 1), h)
		require.NoError(t, err, key)
		require.Equal(t, agent.Transient, v, key)
		require.Equal(t, messages.Error, reply.Outcome, key)
		require.Contains(t, reply.Reason, "breaks the key rule ("+messages.KeyRule+")", key)
		_, err = s.Get(context.Background(), key, new(int64))
		require.ErrorIs(t, err, messages.ErrBadRequest, key)
	}
	require.Equal(t, int64(100), balance(t, s))
}

// holder lends one thing: an execute takes it when no saga holds it and is
// rejected otherwise; a compensation gives it back if its saga holds it,
// and otherwise has nothing to do and writes nothing.
func holder() agent.Handler {
	const key = "holder"
	return agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			var who string
			if _, err := tx.Get(key, &who); err != nil {
				return nil, err
			}
			if who != "" {
				return nil, agent.Reject("held by %s", who)
			}
			return messages.Context{}, tx.Put(key, cmd.SagaID)
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			var who string
			if _, err := tx.Get(key, &who); err != nil || who != cmd.SagaID {
				return err
			}
			return tx.Put(key, "")
		},
	}
}

// TestCopiesDecideOnWhatOtherCopiesWrote: two copies of a role that is not
// serial share a key. A copy decides on the value as stored, not as it
// last saw it: a compensation that finds nothing of its execute writes
// nothing, and a rejection writes nothing, so no compare-and-swap write
// would catch a value the other copy changed since.
func TestCopiesDecideOnWhatOtherCopiesWrote(t *testing.T) {
	_, url := testenv.Server(t)
	open := func() *participant.Store {
		s, err := participant.OpenStore(context.Background(), testenv.Connect(t, url), "lender", true, 1)
		require.NoError(t, err)
		return s
	}
	a, b := open(), open()
	h := holder()
	lend := func(s *participant.Store, id string, action messages.Action) messages.Reply {
		t.Helper()
		cmd := &messages.Command{V: messages.Version, SagaID: id, Saga: "loan", Step: "lend", Action: action, Attempt: 1, Seq: 1}
		if action == messages.Compensate {
			cmd.Seq = 2
		}
		reply, _ := do(t, s, h, cmd)
		return reply
	}
	held := func() string {
		var who string
		_, err := a.Get(context.Background(), "holder", &who)
		require.NoError(t, err)
		return who
	}

	require.Equal(t, messages.OK, lend(a, "s-1", messages.Execute).Outcome) // a last saw s-1 hold it
	require.Equal(t, messages.OK, lend(b, "s-1", messages.Compensate).Outcome)
	require.Equal(t, messages.OK, lend(b, "s-2", messages.Execute).Outcome)
	require.Equal(t, "s-2", held())

	// a compensates s-2: what a last saw (s-1 holds it) would say there
	// is nothing to give back, and s-2 would hold it for ever.
	require.Equal(t, messages.OK, lend(a, "s-2", messages.Compensate).Outcome)
	require.Empty(t, held(), "the compensation gave it back")

	// b takes it for s-3; a, having last seen it free, rejects s-4 (its
	// write of s-4 would not have been taken).
	require.Equal(t, messages.OK, lend(b, "s-3", messages.Execute).Outcome)
	reply := lend(a, "s-4", messages.Execute)
	require.Equal(t, messages.Failed, reply.Outcome)
	require.Equal(t, "held by s-3", reply.Reason)

	// b gives it back; a, having last seen s-3 hold it, must not reject
	// s-5 for that.
	require.Equal(t, messages.OK, lend(b, "s-3", messages.Compensate).Outcome)
	require.Equal(t, messages.OK, lend(a, "s-5", messages.Execute).Outcome)
	require.Equal(t, "s-5", held())
}

// TestRolesDifferingOnlyInCase: a role's streams are named by its name in
// upper case. A second role whose name differs from the first's only in
// case is refused, and the first role's streams keep their subjects.
func TestRolesDifferingOnlyInCase(t *testing.T) {
	_, url := testenv.Server(t)
	ctx := context.Background()
	bank := openBank(t, url, 100)
	_, err := participant.OpenStore(ctx, testenv.Connect(t, url), "Bank", true, 1)
	require.ErrorIs(t, err, participant.ErrRoleCase)
	require.ErrorContains(t, err, `stream NATSAGA_STATE_BANK holds the subjects [natsaga.state.bank.>], not role "Bank"'s`)
	_, err = participant.OpenStore(ctx, testenv.Connect(t, url), "BANK", false, 1)
	require.ErrorIs(t, err, participant.ErrRoleCase)
	require.Equal(t, int64(100), balance(t, bank), "the bank's state is where it was")
	reply, _ := do(t, bank, newDebit().handler(), command("s-1", messages.Execute, 1, 30))
	require.Equal(t, messages.OK, reply.Outcome, "and its records too")
}

// TestRoleStreamOfAnEarlierConfigurationIsUpdated: a role's state stream
// as an earlier agent left it (here without direct gets) is updated to
// the configuration asked, keeping its subjects and values.
func TestRoleStreamOfAnEarlierConfigurationIsUpdated(t *testing.T) {
	_, url := testenv.Server(t)
	ctx := context.Background()
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	old := participant.StreamConfig(bankRole, 1)
	old.AllowDirect = false
	_, err = js.CreateStream(ctx, old)
	require.NoError(t, err)
	bank := openBank(t, url, 100)
	require.Equal(t, int64(100), balance(t, bank))
	st, err := js.Stream(ctx, old.Name)
	require.NoError(t, err)
	require.True(t, st.CachedInfo().Config.AllowDirect, "updated")
	require.Equal(t, old.Subjects, st.CachedInfo().Config.Subjects)
}

// TestValueNamingARecordNeverWrittenIsNotCarriedOn: a state value whose
// envelope names a sequence of the record log that the log never reached
// (written by hand, or before the log was made anew) is written next with
// the sequence this copy has read, and the bogus one is gone: each write
// would otherwise hand it on, and every action writing the value would
// wait for the log to reach it.
func TestValueNamingARecordNeverWrittenIsNotCarriedOn(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 1000)
	d := newDebit()
	_, v := do(t, s, d.handler(), command("s1", messages.Execute, 1, 100))
	require.Equal(t, agent.Applied, v)

	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	subject := messages.DataSubject(bankRole, balanceKey)
	_, err = js.Publish(t.Context(), subject, []byte(`{"value":900,"records":18446744073709551615}`))
	require.NoError(t, err)

	// A second copy, which holds nothing of the value yet.
	other, err := participant.OpenStore(t.Context(), testenv.Connect(t, url), bankRole, true, 1)
	require.NoError(t, err)
	_, v = do(t, other, d.handler(), command("s2", messages.Execute, 1, 100))
	require.Equal(t, agent.Applied, v)
	require.Equal(t, int64(800), balance(t, other))

	stream, err := js.Stream(t.Context(), messages.StateStream(bankRole))
	require.NoError(t, err)
	m, err := stream.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	var env struct {
		Records uint64 `json:"records"`
	}
	require.NoError(t, json.Unmarshal(m.Data, &env))
	records, err := js.Stream(t.Context(), messages.RecordStream(bankRole))
	require.NoError(t, err)
	info, err := records.Info(t.Context())
	require.NoError(t, err)
	require.LessOrEqual(t, env.Records, info.State.LastSeq, "the sequence written is one the log holds")
	require.NotZero(t, env.Records, "s1's record, read, is named")
}

// TestDuplicateAnsweredFromItsRecordWhateverTheHandlerDoesNow: an execute
// is first run on the guess that its branch has no record. A duplicate
// whose handler now fails (a read that errs, a bug since fixed the other
// way) is answered from its record, as agent.Memory answers it, not with
// the handler's error: that spent one of the saga's retries on a step
// recorded done, and with every retry so, rolled the saga back.
func TestDuplicateAnsweredFromItsRecordWhateverTheHandlerDoesNow(t *testing.T) {
	_, url := testenv.Server(t)
	s := openBank(t, url, 100)
	var fail atomic.Bool
	audit := agent.Handler{Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
		var bal int64
		if _, err := tx.Get(balanceKey, &bal); err != nil {
			return nil, err
		}
		if fail.Load() {
			return nil, errors.New("the audit service is down")
		}
		return messages.Context{}.MustSet("seen", bal), nil
	}, Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil }}

	first, v := do(t, s, audit, command("a1", messages.Execute, 1, 0))
	require.Equal(t, agent.Applied, v)
	require.Equal(t, messages.OK, first.Outcome)
	fail.Store(true)
	for range 2 {
		again, v := do(t, s, audit, command("a1", messages.Execute, 1, 0))
		require.Equal(t, agent.Duplicate, v, again.Reason)
		require.Equal(t, messages.OK, again.Outcome)
		require.Equal(t, first.Output, again.Output)
	}

	m := agent.NewMemory()
	_, err := m.Init(context.Background(), balanceKey, int64(100))
	require.NoError(t, err)
	fail.Store(false)
	_, _, err = m.Do(context.Background(), command("a1", messages.Execute, 1, 0), audit)
	require.NoError(t, err)
	fail.Store(true)
	mine, v, err := m.Do(context.Background(), command("a1", messages.Execute, 1, 0), audit)
	require.NoError(t, err)
	require.Equal(t, agent.Duplicate, v, "the in-memory store answers so too")
	require.Equal(t, first.Output, mine.Output)

	// A command of a branch with no record still gets its handler's error.
	fresh, v := do(t, s, audit, command("a2", messages.Execute, 1, 0))
	require.Equal(t, agent.Transient, v)
	require.Equal(t, messages.Error, fresh.Outcome)
	require.Equal(t, "the audit service is down", fresh.Reason)
}
