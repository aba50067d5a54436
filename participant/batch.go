package participant

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// A serial copy holds many commands, and applies them one after the other
// to one shared value (a budget). Committed one by one, each that changes
// the value costs a read of its branch and two writes in a row, each
// waiting for its acknowledgement. [Store.runBatch] runs a batch of such
// commands in order against the value in memory, and commits them together
// in four steps, each of many requests sent at once:
//
//  1. the branches of the commands that write are checked, in one request;
//  2. every command that writes no value records its final result;
//  3. the value is written once, its envelope naming every writer of the
//     batch with its output;
//  4. every writer records its final result.
//
// An execute is taken to have no record, as a command alone takes it. A
// compensation reads its record first, as a command alone does: one with
// nothing to undo records that result, one whose execute took effect runs
// its handler; any other (answered already, or its execute still being
// written) ends the batch before it. Step 1 checks that every writer's
// record is still what the writer took it to be: none for an execute, the
// one it read for a compensation. A writer whose record moved is a command
// answered before (a redelivery, or a resend after a coordinator's
// restart), or one compensated first: the commands after it ran on an
// effect that is not applied again, so the batch ends before it, and none
// of their results is recorded. That is why the branches are checked
// first, after the value is read and before it is written, as a command
// alone reads its own.
//
// Each step is what a single command does, so a crash between two steps
// is repaired the same way: a redelivered writer finds itself in the
// envelope. A command that writes no value records its result before any
// later write is stored, as it would alone, so that a command run again
// never sees the effect of one after it. Each record is guarded by the
// revision its command took its branch at: a writer whose record meets a
// compensation recorded since step 1 is left unanswered (run alone, it
// finds its write and undoes it: store.go, [branch.recordWritten]), and
// one that writes no value ends the batch there.
//
// A batch holds commands whose writes all go to one value, each of its
// own branch. Anything else (a second value, a second command of a branch
// already in the batch, a command found answered or claimed, a handler's
// transient error or rejected compensation, a write that meets a conflict,
// a role whose agents before the record log left records in its state
// stream) ends the batch before it: that command and the ones after it
// are run one by one, as a command alone would be.
//
// JetStream's atomic batch publish (nats-server 2.12) would commit the
// records and the value all or nothing, in one request. It is not used:
// on a file-backed stream with one replica the server keeps each batch in
// a file store of its own until it commits, and, measured with
// BenchmarkCommit (commit_bench_test.go), a batch costs far more than the
// writes it replaces.

// maxBatch bounds the commands a serial copy runs together.
const maxBatch = 256

// batchItem is one command of a batch.
type batchItem struct {
	cmd *messages.Command
	h   agent.Handler
	op  string
	// Filled in by runBatch. rec and rev are the branch's record as the
	// command took it (none for an execute), which its own is written
	// over.
	rec      Record
	rev      uint64
	result   *Result
	value    json.RawMessage // the value after this command, when it wrote it
	answered bool            // its final result is recorded
}

// record is the branch record it.result makes.
func (it *batchItem) record() Record {
	if it.cmd.Action == messages.Compensate {
		r := it.rec
		r.Compensate = it.result
		return r
	}
	return Record{Execute: it.result}
}

// takeBranch reads the record of it, a compensation, as a command alone
// does, and reports whether the batch may take it: a compensation with
// nothing to undo then has its result, one whose execute took effect is
// to run its handler. Any other ends the batch, as does a role with
// records in its state stream (s.legacy), whose reads it leaves to the
// command alone.
func (s *Store) takeBranch(ctx context.Context, it *batchItem) bool {
	var err error
	if it.rec, it.rev, err = s.branchAfter(ctx, it.cmd.SagaID, it.cmd.Step, 0); err != nil {
		return false
	}
	s.logMu.Lock()
	legacy := s.legacy
	s.logMu.Unlock()
	if legacy {
		return false
	}
	switch agent.Decide(it.rec, messages.Compensate) {
	case agent.NothingToUndo:
		it.result = agent.NoopResult(it.cmd, time.Now().UTC())
		return true
	case agent.Run:
		return true
	}
	return false
}

// runBatch runs items, commands of one serial role in the order given,
// and records the results it can. It returns how many leading items it
// ran in the batch; of those, items[i].answered says which have their
// final result recorded. Every other item must be run alone, in order.
func (s *Store) runBatch(ctx context.Context, items []*batchItem) int {
	n, subject, base := s.runAhead(ctx, items)
	if n < 2 {
		// Nothing gained: the first command goes alone.
		unrun(items[:n])
		return 0
	}
	items = items[:n]

	// Step 1: the branches of the writers, checked in one request now
	// that the value is read, and before it is written. One whose record
	// moved (its command was answered before: a redelivery, or a resend by
	// a restarted coordinator; or it was compensated first) ends the batch
	// before it: the commands after it ran on its effect, which is not
	// applied again, so none of their results may be recorded.
	cut, err := s.firstMoved(ctx, items, base)
	if err != nil {
		unrun(items)
		return 0
	}
	// Step 2: the final results of the readers before the cut. One that
	// fails ends the batch before it too.
	readers := filter(items[:cut], func(it *batchItem) bool { return it.value == nil })
	ok := s.recordAll(ctx, readers, func(it *batchItem) { it.answered = true })
	if j := slices.Index(ok, false); j >= 0 {
		cut = slices.Index(items, readers[j])
	}
	writers := filter(items[:cut], func(it *batchItem) bool { return it.value != nil })
	if len(writers) == 0 {
		return cut
	}
	// Step 3: the value, once, naming every writer of the batch.
	if !s.writeBatchValue(ctx, writers, subject, base) {
		// No writer wrote: each, run alone, applies itself.
		return cut
	}
	// Step 4: the writers' final results.
	s.recordAll(ctx, writers, func(it *batchItem) {
		it.answered = true
		s.settle(subject, it.op)
	})
	return cut
}

// runAhead runs the handlers of items in turn, each on the value as the
// ones before it left it, and returns how many it ran: up to the first
// that must go alone (a branch twice, a compensation whose branch cannot
// be taken, a handler that found its own write, failed transiently or
// wrote more than one value, or a second value written). It returns the
// one value written, as stored before the batch, when any was.
func (s *Store) runAhead(ctx context.Context, items []*batchItem) (n int, subject string, base cached) {
	overlay := map[string]cached{}
	branches := map[string]bool{}
	for ; n < len(items); n++ {
		it := items[n]
		key := messages.RecordKey(it.cmd.SagaID, it.cmd.Step)
		if branches[key] {
			break // its record is the one before it writes: alone
		}
		branches[key] = true
		if it.cmd.Action == messages.Compensate {
			if !s.takeBranch(ctx, it) {
				break
			}
			if it.result != nil { // nothing to undo
				continue
			}
		}
		tx := &txn{ctx: ctx, store: s, op: it.op, reads: map[string]cached{}, overlay: overlay}
		out, err := it.h.Run(ctx, tx, it.cmd)
		tx.release()
		if tx.found != "" || errors.Is(err, ErrUnavailable) {
			break
		}
		c := agent.Conclude(it.cmd, out, err, false, time.Now().UTC(), messages.MaxOutputFor(s.maxPayload))
		if c.Redeliver || c.Result == nil {
			break
		}
		if !c.Keep {
			tx.writes = nil
		}
		if len(tx.writes) > 1 {
			break
		}
		if len(tx.writes) == 1 {
			w := tx.writes[0]
			if subject == "" {
				subject, base = w.subject, tx.reads[w.subject]
			} else if w.subject != subject {
				break
			}
			it.value = w.value
			overlay[subject] = cached{env: envelope{Value: w.value, Ops: base.env.Ops, Records: base.env.Records}, seq: base.seq}
		}
		it.result = c.Result
	}
	return n, subject, base
}

// firstMoved reads the branches of items' writers in one request and
// returns the place of the first whose record moved since it was taken,
// or len(items).
func (s *Store) firstMoved(ctx context.Context, items []*batchItem, base cached) (int, error) {
	var (
		writerAt []int
		cmds     []*messages.Command
		revs     []uint64
	)
	for i, it := range items {
		if it.value != nil {
			writerAt = append(writerAt, i)
			cmds = append(cmds, it.cmd)
			revs = append(revs, it.rev)
		}
	}
	if len(cmds) == 0 {
		return len(items), nil
	}
	moved, err := s.moved(ctx, cmds, revs, base.env.Records)
	if err != nil {
		return 0, err
	}
	if j := slices.Index(moved, true); j >= 0 {
		return writerAt[j], nil
	}
	return len(items), nil
}

// writeBatchValue writes subject's value as the last of writers left it,
// expecting it as base, with every writer named in its envelope, and
// reports whether it was stored.
func (s *Store) writeBatchValue(ctx context.Context, writers []*batchItem, subject string, base cached) bool {
	env := envelope{Value: writers[len(writers)-1].value, Ops: map[string]messages.Context{}}
	s.stamp(ctx, &env, base.env)
	settled := s.settledOps(subject)
	for op, o := range base.env.Ops {
		env.Ops[op] = o
	}
	for _, op := range settled {
		delete(env.Ops, op)
	}
	for _, it := range writers {
		out := it.result.Output
		if out == nil {
			out = messages.Context{}
		}
		env.Ops[it.op] = out
	}
	data, err := wirejson.AppendStateEnvelope(nil, &env)
	if err != nil {
		return false
	}
	ack, err := s.js.Publish(ctx, subject, data, jetstream.WithExpectLastSequencePerSubject(base.seq))
	if err != nil {
		s.forgetAll()
		return false
	}
	s.remember(subject, cached{env: env, seq: ack.Sequence})
	s.unsettle(subject, settled)
	return true
}

// unrun takes back the results runAhead gave items: each is run alone.
func unrun(items []*batchItem) {
	for _, it := range items {
		it.result, it.value = nil, nil
	}
}

// filter returns the items keep keeps, in order.
func filter(items []*batchItem, keep func(*batchItem) bool) []*batchItem {
	var kept []*batchItem
	for _, it := range items {
		if keep(it) {
			kept = append(kept, it)
		}
	}
	return kept
}

// recordAll records the result of each of items, expecting the record it
// took its branch at, in one message of the role's record log when they
// fit; it calls stored with each that was stored, and reports which were.
func (s *Store) recordAll(ctx context.Context, items []*batchItem, stored func(*batchItem)) []bool {
	ok := make([]bool, len(items))
	if len(items) == 0 {
		return ok
	}
	l, err := s.records(ctx)
	if err != nil {
		return ok
	}
	es := make([]kvlog.Entry, 0, len(items))
	for _, it := range items {
		r := it.record()
		data, err := wirejson.AppendRecord(make([]byte, 0, 192), &r)
		if err != nil {
			break // the items after it are not recorded either
		}
		es = append(es, kvlog.Entry{Key: messages.RecordKey(it.cmd.SagaID, it.cmd.Step), Value: data, Rev: it.rev})
	}
	ctx, cancel := context.WithTimeout(ctx, replyWait)
	defer cancel()
	_, errs := l.PutAll(ctx, es)
	for i, err := range errs {
		if err == nil {
			ok[i] = true
			stored(items[i])
		}
	}
	return ok
}
