package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// An action that writes commits in two writes: its value, naming it in the
// envelope, then its branch record. A compensation that finds no record
// between the two is recorded as having nothing to undo; the execute then
// finds the compensation where its record should go, and undoes its own
// write. These tests build the states such a race leaves, as a crash would
// leave them, and deliver the commands that follow.

// pay takes the command's amount from the budget; its compensation gives
// it back to the key refundTo names, counting its runs.
type pay struct {
	refundTo     string
	compensation atomic.Int64
}

func (p *pay) handler() agent.Handler {
	return agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			var budget int
			if _, err := tx.Get("budget", &budget); err != nil {
				return nil, err
			}
			return messages.Context{}, tx.Put("budget", budget-amount(cmd))
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			p.compensation.Add(1)
			var v int
			if _, err := tx.Get(p.refundTo, &v); err != nil {
				return err
			}
			return tx.Put(p.refundTo, v+amount(cmd))
		},
	}
}

func payment(id string, action messages.Action) *messages.Command {
	return &messages.Command{V: messages.Version, SagaID: id, Saga: "pay", Step: "pay", Action: action,
		Attempt: 1, Seq: 1, Context: messages.Context{"amount": json.RawMessage("30")}}
}

// writtenNotRecorded leaves the state of an execute of cmd that wrote its
// value and stopped before its record.
func writtenNotRecorded(t *testing.T, s *Store, cmd *messages.Command, h agent.Handler) {
	t.Helper()
	ctx := context.Background()
	op := cmd.SagaID + "/" + cmd.Step + "/" + string(cmd.Action)
	tx := &txn{ctx: ctx, store: s, op: op, reads: map[string]cached{}}
	out, err := h.Run(ctx, tx, cmd)
	require.NoError(t, err)
	require.NoError(t, s.writeValue(ctx, tx, op, out))
	tx.release()
}

// raced leaves what the race leaves for saga id: its execute wrote its
// value and stopped, and its compensation, finding no record, was
// recorded as having nothing to undo. It returns the execute.
func raced(t *testing.T, s *Store, id string, h agent.Handler) *messages.Command {
	t.Helper()
	exec := payment(id, messages.Execute)
	writtenNotRecorded(t, s, exec, h)
	_, verdict, err := s.Do(context.Background(), payment(id, messages.Compensate), h)
	require.NoError(t, err)
	require.Equal(t, agent.Noop, verdict)
	return exec
}

// refused delivers cmd, and requires it refused.
func refused(t *testing.T, s *Store, cmd *messages.Command, h agent.Handler) {
	t.Helper()
	reply, verdict, err := s.Do(context.Background(), cmd, h)
	require.NoError(t, err)
	require.Equal(t, agent.Refused, verdict)
	require.Equal(t, agent.Refusal(cmd), reply)
}

// runAfterRead runs cmd as a run after a conflict does: its branch read
// first, then decided.
func runAfterRead(t *testing.T, s *Store, cmd *messages.Command, h agent.Handler) (messages.Reply, agent.Verdict, error) {
	t.Helper()
	ctx := context.Background()
	rec, seq, err := s.Branch(ctx, cmd.SagaID, cmd.Step)
	require.NoError(t, err)
	b := &branch{s: s, cmd: cmd, h: h, key: messages.RecordKey(cmd.SagaID, cmd.Step), op: opName(cmd, string(cmd.Action)), rec: rec, seq: seq}
	return b.run(ctx)
}

// tillWithRefunds is a till whose compensations credit "refunds".
func tillWithRefunds(t *testing.T) (*Store, *pay) {
	t.Helper()
	s := openTill(t)
	_, err := s.Init(context.Background(), "refunds", 0)
	require.NoError(t, err)
	return s, &pay{refundTo: "refunds"}
}

// envelopeOf reads key as stored, past the cache.
func envelopeOf(t *testing.T, s *Store, key string) (envelope, int) {
	t.Helper()
	env, _, err := s.readEnvelope(context.Background(), messages.DataSubject(s.role, key))
	require.NoError(t, err)
	var v int
	require.NoError(t, json.Unmarshal(env.Value, &v))
	return env, v
}

func lastSeq(t *testing.T, s *Store) uint64 {
	t.Helper()
	info, err := s.stream.Info(context.Background())
	require.NoError(t, err)
	return info.State.LastSeq
}

func TestExecuteWrittenBeforeItsCompensationUndoesItself(t *testing.T) {
	s := openTill(t)
	ctx := context.Background()
	p := &pay{refundTo: "budget"}
	h := p.handler()
	// The compensation finds no record: nothing to undo, its handler not run.
	exec := raced(t, s, "s-1", h)
	require.Zero(t, p.compensation.Load())
	_, budget := envelopeOf(t, s, "budget")
	require.Equal(t, 70, budget, "the execute's write is there")

	// The execute delivered again: refused, its write undone in one write.
	before := lastSeq(t, s)
	refused(t, s, exec, h)
	env, budget := envelopeOf(t, s, "budget")
	require.Equal(t, 100, budget)
	require.NotContains(t, env.Ops, "s-1/pay/execute", "the envelope forgets the undone execute")
	require.Equal(t, before+1, lastSeq(t, s), "the undo is one write")
	require.Equal(t, int64(1), p.compensation.Load())

	// And again: refused, nothing undone twice.
	refused(t, s, exec, h)
	_, budget = envelopeOf(t, s, "budget")
	require.Equal(t, 100, budget)
	require.Equal(t, int64(1), p.compensation.Load())
	rec, _, err := s.Branch(ctx, "s-1", "pay")
	require.NoError(t, err)
	require.Nil(t, rec.Execute, "the record keeps the compensation alone")
	require.True(t, rec.Compensate.Noop)
}

// TestRefusedExecuteLooksForItsWrite: the execute reads its branch first
// (a run after a conflict does) and finds the compensation: it is refused,
// after looking for, and undoing, a write of its own.
func TestRefusedExecuteLooksForItsWrite(t *testing.T) {
	s := openTill(t)
	p := &pay{refundTo: "budget"}
	h := p.handler()
	exec := raced(t, s, "s-2", h)
	reply, verdict, err := runAfterRead(t, s, exec, h)
	require.NoError(t, err)
	require.Equal(t, agent.Refused, verdict)
	require.Equal(t, agent.Refusal(exec), reply)
	_, budget := envelopeOf(t, s, "budget")
	require.Equal(t, 100, budget)
	require.Equal(t, int64(1), p.compensation.Load())
}

// TestUndoOfACompensationThatWritesAnotherValue: the compensation credits
// another key. The undo writes it first, naming itself, then the budget
// forgets the execute; a run after a crash between the two credits once.
func TestUndoOfACompensationThatWritesAnotherValue(t *testing.T) {
	s, p := tillWithRefunds(t)
	ctx := context.Background()
	h := p.handler()
	refused(t, s, raced(t, s, "s-3", h), h)
	env, budget := envelopeOf(t, s, "budget")
	require.Equal(t, 70, budget, "the compensation gives back elsewhere")
	require.NotContains(t, env.Ops, "s-3/pay/execute")
	_, refunds := envelopeOf(t, s, "refunds")
	require.Equal(t, 30, refunds)

	// A crash between the undo's two writes: the refund is written, the
	// budget still names the execute.
	exec := raced(t, s, "s-4", h)
	undo := &txn{ctx: ctx, store: s, op: "s-4/pay/undo", reads: map[string]cached{}}
	comp := *exec
	comp.Action = messages.Compensate
	_, err := h.Run(ctx, undo, &comp)
	require.NoError(t, err)
	require.NoError(t, s.writeValue(ctx, undo, "s-4/pay/undo", messages.Context{}))
	undo.release()
	_, refunds = envelopeOf(t, s, "refunds")
	require.Equal(t, 60, refunds)

	refused(t, s, exec, h)
	env, budget = envelopeOf(t, s, "budget")
	require.Equal(t, 40, budget)
	require.NotContains(t, env.Ops, "s-4/pay/execute")
	_, refunds = envelopeOf(t, s, "refunds")
	require.Equal(t, 60, refunds, "the refund written before the crash is not written again")
}

// TestWritingActionStoresTwoMessages: an action that writes stores its
// value and its record, and nothing else; a serial batch stores the value
// once, and its readers' records and its writers' in a message each.
func TestWritingActionStoresTwoMessages(t *testing.T) {
	s := openTill(t)
	ctx := context.Background()
	l, err := s.records(ctx)
	require.NoError(t, err)
	before, records := lastSeq(t, s), recordMessages(t, s)
	_, verdict, err := s.Do(ctx, tillItems()[1].cmd, spend)
	require.NoError(t, err)
	require.Equal(t, agent.Applied, verdict)
	require.Equal(t, before+1, lastSeq(t, s), "the value")
	require.Equal(t, records+1, recordMessages(t, s), "the record")

	items := tillItems()[2:]
	before, records = lastSeq(t, s), recordMessages(t, s)
	require.Equal(t, len(items), s.runBatch(ctx, items))
	for _, it := range items {
		require.True(t, it.answered, it.op)
	}
	require.Equal(t, before+1, lastSeq(t, s), "the value once")
	require.Equal(t, records+2, recordMessages(t, s), "the readers' records, then the writers'")
	for _, it := range items {
		v, _, err := l.Value(t.Context(), messages.RecordKey(it.cmd.SagaID, it.cmd.Step))
		require.NoError(t, err)
		rec, err := wirejson.DecodeRecord(v)
		require.NoError(t, err, it.op)
		require.True(t, rec.Execute.Done(), it.op)
		require.Equal(t, it.result.Outcome, rec.Execute.Outcome, it.op)
	}
}

// recordMessages is how many messages s's record log holds.
func recordMessages(t *testing.T, s *Store) uint64 {
	t.Helper()
	st, err := s.js.Stream(context.Background(), messages.RecordStream(s.role))
	require.NoError(t, err)
	return st.CachedInfo().State.Msgs
}

// TestClaimOfAnEarlierAgentIsHonoured: agents before this one claimed a
// branch (a pending result) before writing the value. A compensation that
// meets such a claim waits; the execute, delivered again, finishes on it.
func TestClaimOfAnEarlierAgentIsHonoured(t *testing.T) {
	s := openTill(t)
	ctx := context.Background()
	p := &pay{refundTo: "budget"}
	h := p.handler()
	exec := payment("s-5", messages.Execute)
	claim := &branch{s: s, cmd: exec, key: messages.RecordKey("s-5", "pay"),
		rec: Record{Execute: &Result{Pending: true, Seq: exec.Seq}}}
	require.NoError(t, claim.record(ctx))

	_, _, err := s.Do(ctx, payment("s-5", messages.Compensate), h)
	require.ErrorIs(t, err, ErrUnavailable, "a compensation waits for a claimed execute")
	require.Zero(t, p.compensation.Load())

	reply, verdict, err := s.Do(ctx, exec, h)
	require.NoError(t, err)
	require.Equal(t, agent.Applied, verdict)
	require.Equal(t, messages.OK, reply.Outcome)
	_, budget := envelopeOf(t, s, "budget")
	require.Equal(t, 70, budget)

	_, verdict, err = s.Do(ctx, payment("s-5", messages.Compensate), h)
	require.NoError(t, err)
	require.Equal(t, agent.Applied, verdict)
	_, budget = envelopeOf(t, s, "budget")
	require.Equal(t, 100, budget)
}

// TestLateUndoAfterAnotherFinished: a run found the execute's write and is
// about to undo it while another run undoes it, and a later write drops
// the undo's name from the other value. The late run credits nothing.
func TestLateUndoAfterAnotherFinished(t *testing.T) {
	s, p := tillWithRefunds(t)
	ctx := context.Background()
	h := p.handler()
	exec := raced(t, s, "s-6", h)
	refused(t, s, exec, h)
	// Another saga's refund writes the other value, dropping the undo's name.
	writtenNotRecorded(t, s, payment("s-7", messages.Compensate), h)
	env, refunds := envelopeOf(t, s, "refunds")
	require.Equal(t, 60, refunds)
	require.NotContains(t, env.Ops, "s-6/pay/undo")

	late := &branch{s: s, cmd: exec, h: h, key: messages.RecordKey("s-6", "pay"), op: "s-6/pay/execute"}
	require.NoError(t, late.undo(ctx, messages.DataSubject(till, "budget")))
	_, refunds = envelopeOf(t, s, "refunds")
	require.Equal(t, 60, refunds, "the late undo credits nothing")
}

// TestOpenStoreLeavesItsStreamAlone: every copy of a role opens its state
// and record streams as it starts; a stream already as asked is not updated (an
// update races, in nats-server, with the coordinator creating its
// consumer on the stream: internal/streams).
func TestOpenStoreLeavesItsStreamAlone(t *testing.T) {
	nc := connectEmbedded(t)
	sub, err := nc.SubscribeSync("$JS.API.STREAM.UPDATE.>")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	for range 3 {
		s, err := OpenStore(context.Background(), nc, till, true, 1)
		require.NoError(t, err)
		_, err = s.records(context.Background())
		require.NoError(t, err)
		s.Close()
	}
	require.NoError(t, nc.Flush())
	_, err = sub.NextMsg(100 * time.Millisecond)
	require.ErrorIs(t, err, nats.ErrTimeout, "no update of a stream already as asked")
}

// TestRecordsOfEarlierAgentsAreRead: agents before the record log kept
// each branch's record on a subject of its own in the state stream. A
// store opened on such a stream reads them where the log holds nothing:
// a duplicate of a command answered then gets its recorded answer, and a
// compensation of it finds what to undo.
func TestRecordsOfEarlierAgentsAreRead(t *testing.T) {
	s := openTill(t)
	ctx := context.Background()
	exec := payment("s-old", messages.Execute)
	old := Record{Execute: &Result{Outcome: messages.OK, Seq: exec.Seq, Output: messages.Context{}.MustSet("paid", 30)}}
	data, err := wirejson.AppendRecord(nil, &old)
	require.NoError(t, err)
	_, err = s.js.Publish(ctx, messages.BranchSubject(till, "s-old", "pay"), data)
	require.NoError(t, err)

	rec, rev, err := s.Branch(ctx, "s-old", "pay")
	require.NoError(t, err)
	require.True(t, s.legacy)
	require.Equal(t, old.Execute.Output, rec.Execute.Output)
	require.Zero(t, rev, "the log holds nothing for it yet")

	p := &pay{refundTo: "budget"}
	reply, verdict, err := s.Do(ctx, exec, p.handler())
	require.NoError(t, err)
	require.Equal(t, agent.Duplicate, verdict)
	require.Equal(t, old.Execute.Output, reply.Output)
	_, budget := envelopeOf(t, s, "budget")
	require.Equal(t, 100, budget, "not run again")

	// A store on a stream without such records never looks for them.
	fresh := openTill(t)
	_, _, err = fresh.Branch(ctx, "s-old", "pay")
	require.NoError(t, err)
	require.False(t, fresh.legacy)
}

// TestExecuteAfterACompensationOfAnotherCopy: one copy runs an execute,
// another its compensation. The other copy never learnt the execute was
// recorded, so the value it writes still names the execute. The execute
// delivered again after the compensation is refused, by either way in,
// and nothing is given back twice: the name is a leftover, not a write
// that no record accounts for.
func TestExecuteAfterACompensationOfAnotherCopy(t *testing.T) {
	ctx := context.Background()
	a, b := twoCopies(t)
	p := &pay{refundTo: "budget"}
	h := p.handler()
	exec, comp := payment("s-1", messages.Execute), payment("s-1", messages.Compensate)
	comp.Seq = 2

	_, verdict, err := a.Do(ctx, exec, h)
	require.NoError(t, err)
	require.Equal(t, agent.Applied, verdict)
	_, verdict, err = b.Do(ctx, comp, h)
	require.NoError(t, err)
	require.Equal(t, agent.Applied, verdict)
	env, budget := envelopeOf(t, b, "budget")
	require.Equal(t, 100, budget)
	require.Contains(t, env.Ops, "s-1/pay/execute", "the compensating copy keeps the execute's name")

	// Delivered again, run first as an execute with no record yet.
	refused(t, b, exec, h)
	// Delivered again, its branch read first (a run after a conflict).
	reply, verdict, err := runAfterRead(t, b, exec, h)
	require.NoError(t, err)
	require.Equal(t, agent.Refused, verdict)
	require.Equal(t, agent.Refusal(exec), reply)

	_, budget = envelopeOf(t, b, "budget")
	require.Equal(t, 100, budget, "given back once")
	require.Equal(t, int64(1), p.compensation.Load())
}

// twoCopies opens two copies of the till role, sharing a budget of 100.
func twoCopies(t *testing.T) (a, b *Store) {
	t.Helper()
	ctx := context.Background()
	nc := connectEmbedded(t)
	open := func() *Store {
		s, err := OpenStore(ctx, nc, till, true, 1)
		require.NoError(t, err)
		return s
	}
	a, b = open(), open()
	_, err := a.Init(ctx, "budget", 100)
	require.NoError(t, err)
	return a, b
}

// TestRefusalFromAStaleCacheUndoesTheStrayWrite: an execute wrote its
// value and stopped before its record; its compensation, finding no
// record, had nothing to undo. The execute delivered again to a copy
// whose cached budget is older than the write runs its handler on that
// value, then finds the compensation before it writes: it is refused, and
// the stray write, on the server and not in its cache, is undone.
func TestRefusalFromAStaleCacheUndoesTheStrayWrite(t *testing.T) {
	ctx := context.Background()
	a, b := twoCopies(t)
	h := (&pay{refundTo: "budget"}).handler()
	_, verdict, err := b.Do(ctx, payment("w", messages.Execute), h) // b caches 70
	require.NoError(t, err)
	require.Equal(t, agent.Applied, verdict)

	exec := raced(t, a, "x", h) // 40, the write no record names
	_, budget := envelopeOf(t, a, "budget")
	require.Equal(t, 40, budget)
	refused(t, b, exec, h)
	_, budget = envelopeOf(t, a, "budget")
	require.Equal(t, 70, budget, "the stray write undone")
}

// TestExecuteAfterItsCompensationIsRefused: one copy executes, another
// compensates, the first gets the execute again at once. However far its
// record log has read, the execute is refused, never answered as done:
// whether the value it reads still names the execute, or a later write
// of the first copy's dropped the name (every other round, another
// execute between).
func TestExecuteAfterItsCompensationIsRefused(t *testing.T) {
	ctx := context.Background()
	a, b := twoCopies(t)
	h := (&pay{refundTo: "budget"}).handler()
	want := 100
	for i := range 200 {
		id := fmt.Sprintf("s-%d", i)
		exec, comp := payment(id, messages.Execute), payment(id, messages.Compensate)
		comp.Seq = 2
		_, verdict, err := b.Do(ctx, exec, h)
		require.NoError(t, err)
		require.Equal(t, agent.Applied, verdict)
		if i%2 == 1 {
			_, verdict, err = b.Do(ctx, payment(id+"-other", messages.Execute), h)
			require.NoError(t, err)
			require.Equal(t, agent.Applied, verdict)
			want -= 30
		}
		_, verdict, err = a.Do(ctx, comp, h)
		require.NoError(t, err)
		require.Equal(t, agent.Applied, verdict)
		refused(t, b, exec, h)
		_, budget := envelopeOf(t, a, "budget")
		require.Equal(t, want, budget, id)
	}
}

// TestRefusalWhoseLookFailsIsDeliveredAgain: the handler run to look for
// a stray write fails before it reads anything: the refusal is not given,
// the command comes again, and the next look finds the write and undoes
// it.
func TestRefusalWhoseLookFailsIsDeliveredAgain(t *testing.T) {
	s := openTill(t)
	h := (&pay{refundTo: "budget"}).handler()
	exec := raced(t, s, "s-1", h)
	var failed atomic.Bool
	flaky := h
	flaky.Execute = func(ctx context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		if failed.CompareAndSwap(false, true) {
			return nil, errors.New("the rate service did not answer")
		}
		return h.Execute(ctx, tx, cmd)
	}
	_, verdict, err := runAfterRead(t, s, exec, flaky)
	require.ErrorIs(t, err, ErrUnavailable)
	require.Equal(t, agent.Transient, verdict)
	_, budget := envelopeOf(t, s, "budget")
	require.Equal(t, 70, budget, "not found yet")

	refused(t, s, exec, flaky)
	_, budget = envelopeOf(t, s, "budget")
	require.Equal(t, 100, budget)
}
