package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/streams"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// bucketHead is what the headers of a key's last entry in the bucket say.
type bucketHead struct {
	key string
	rev uint64
	// status and tick are a saga entry's messages.SagaStatusHeader and
	// messages.SagaTickHeader; empty and -1 when it has none.
	status saga.Status
	tick   int64
}

// finished reports whether the headers say the saga finished completed,
// rolled_back or timed_out, at a tick they give: such a saga, when the log
// holds nothing of it, is counted without its value read. Anything else,
// headers missing (an entry written before them) or malformed included,
// has its value read.
func (h bucketHead) finished() bool {
	return h.status.Valid() && h.status.Terminal() && h.status != saga.Failed && h.tick >= 0
}

// headOf reads a bucket message's key and headers.
func headOf(subject string, rev uint64, h map[string][]string) bucketHead {
	head := bucketHead{key: strings.TrimPrefix(subject, messages.BucketSubject("")), rev: rev, tick: -1}
	get := func(name string) string {
		if v := h[name]; len(v) == 1 {
			return v[0]
		}
		return ""
	}
	head.status = saga.Status(get(messages.SagaStatusHeader))
	if t, err := strconv.ParseInt(get(messages.SagaTickHeader), 10, 64); err == nil {
		head.tick = t
	}
	return head
}

// bucketHeads returns the key and headers of every key's last entry in the
// bucket, deleted keys left out, in the bucket's order. It reads headers only: a
// bucket that keeps hundreds of thousands of finished sagas is read in
// seconds, where their values took a minute (BENCHMARKS.md).
func (c *Coordinator) bucketHeads(ctx context.Context) ([]bucketHead, error) {
	var heads []bucketHead
	err := c.readHeads(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{messages.BucketSubject(">")},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	}, func(h bucketHead, deleted bool) {
		if !deleted {
			heads = append(heads, h)
		}
	})
	return heads, err
}

// readHeads reads the bucket's messages cfg selects, headers only, to the
// end of the stream, and calls each with each one's key and headers, and
// whether it is a marker of a deleted key.
func (c *Coordinator) readHeads(ctx context.Context, cfg jetstream.OrderedConsumerConfig, each func(h bucketHead, deleted bool)) error {
	cfg.HeadersOnly = true
	err := streams.Read(ctx, c.js, messages.SagaBucketStream, cfg, func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
		h := m.Headers()
		each(headOf(m.Subject(), meta.Sequence.Stream, h), deleted(h))
		return true
	})
	if err != nil {
		return fmt.Errorf("read the bucket's headers: %w", err)
	}
	return nil
}

// bucketEntry is a key's last value in the bucket.
type bucketEntry struct {
	key   string
	value []byte
	rev   uint64
}

// maxReadAtOnce bounds the subjects of one batched read of the bucket.
const maxReadAtOnce = 1024

// bucketValues reads the last values of subjects, of the bucket, in
// batches, and returns them in the bucket's order (as a watch gives them),
// deleted keys left out.
func (c *Coordinator) bucketValues(ctx context.Context, subjects []string) ([]bucketEntry, error) {
	var entries []bucketEntry
	for chunk := range slices.Chunk(subjects, maxReadAtOnce) {
		err := c.lastOf(ctx, chunk, func(m *jetstream.RawStreamMsg) {
			if deleted(m.Header) {
				return
			}
			key := strings.TrimPrefix(m.Subject, messages.BucketSubject(""))
			entries = append(entries, bucketEntry{key: key, value: m.Data, rev: m.Sequence})
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(entries, func(a, b bucketEntry) int { return cmp.Compare(a.rev, b.rev) })
	return entries, nil
}

// lastTick is the tick of x's last transition, which the bucket's
// messages.SagaTickHeader carries: the clock was at least there.
func lastTick(x *saga.Execution) int64 {
	if n := len(x.History); n > 0 {
		return x.History[n-1].Tick
	}
	return 0
}

// recover loads every stored saga into the engine and resends the
// outstanding commands. It reads the bucket's headers first: a saga the
// bucket keeps finished for the retention, and the log holds nothing of,
// is counted from its headers alone (see bucketHeads), so that a restart
// after a run of many sagas reads their values no more than it needs to.
func (c *Coordinator) recover(ctx context.Context) error {
	// Each part's time, at debug: a takeover that is slow says where.
	began := time.Now()
	took := func(part string) {
		c.log.Debug("recovery: "+part, "took", time.Since(began))
		began = time.Now()
	}
	heads, err := c.bucketHeads(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for _, h := range heads {
		switch {
		case h.finished():
			c.latestEnded.add(h.status, h.key, h.rev)
		case strings.HasPrefix(h.key, messages.SagaKeyPrefix) && (!h.status.Valid() || h.status.Terminal() && h.status != saga.Failed):
			c.latestEnded.unplaced() // no headers, or a tick that does not read
		}
	}
	took("bucket heads read")
	logged, err := c.readLog(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	took("saga log read")
	// The command stream takes the subjects of the stored definitions,
	// those that fit.
	_, _, subs, err := c.commandSubjects(ctx)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	bucket, finished, tick, round, err := c.loadBucket(ctx, heads, logged, subs)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	took("bucket values read")
	c.engine.RestoreClock(tick)
	stored := c.mergeStored(bucket, logged)
	if _, err := c.ensureCommandStream(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	took("command stream set")
	kept := stored[:0]
	for _, x := range stored {
		// By the saga's own version: a later one may have fewer steps.
		if d, ok := c.engine.DefinitionOf(&x); ok {
			renumber(&x, d, tick)
		}
		if err := c.engine.Restore(x, tick); err != nil {
			c.log.Error("stored saga skipped", "saga_id", x.ID, "err", err)
			delete(c.revs, x.ID)
			// Kept where it is for an operator, in the log as in the
			// bucket.
			c.sagas.skip(x.ID, c.sagas.raw[x.ID])
			continue
		}
		kept = append(kept, x)
	}
	c.sagas.raw = nil
	stored = kept
	if got := c.engine.Tick(); got > messages.AddTicks(tick, messages.MaxTickJump) {
		// A crash may lose the clock's write and keep a saga's, but one
		// commit moves the clock by a tick or so; this far, a stored saga
		// was written by someone else, and every tick a driver sends below
		// it is ignored.
		c.log.Warn("the clock recovered from the stored sagas is far ahead of the clock stored: a saga in the bucket or the saga log holds a tick no tick reached",
			"stored_clock", tick, "recovered_clock", got)
	}
	c.saved = c.engine.Tick()
	var executing []string
	for _, x := range stored {
		if x.Status == saga.InProgress && x.Action == messages.Execute {
			executing = append(executing, x.ID)
		}
	}
	begun, err := c.beginScheduled(ctx, tick, round)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	executing = append(executing, begun...)
	took("sagas restored")
	if err := c.catchUp(ctx, executing); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	took("caught up from the records")
	var out saga.Outbox
	c.engine.Resume(&out)
	if err := c.commit(ctx, &out); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	cmds := c.engine.Outstanding()
	if err := c.held.check(ctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := c.publishCommands(ctx, cmds); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	took("committed, commands sent again")
	if c.sagas.due() {
		if err := c.compact(ctx); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	c.countActive()
	c.warnOverLimits()
	c.log.Info("recovered", "sagas", len(stored)+finished, "finished", finished, "resent", len(cmds), "tick", tick)
	return nil
}

// loadBucket restores from the bucket's heads the finished sagas the saga
// log holds nothing of (counted from their headers alone), and reads the
// values recovery needs: the clock, the stored definitions (restored,
// their subjects taken into subs as they fit) and the other sagas, which it
// returns by id. A stored entry it cannot take is skipped, logged, and
// left where it is for an operator.
func (c *Coordinator) loadBucket(ctx context.Context, heads []bucketHead, logged map[string]logValue, subs *commandSubjects) (bucket map[string]bucketSaga, finished int, tick, round int64, err error) {
	var read []string
	for _, h := range heads {
		if id, ok := strings.CutPrefix(h.key, messages.SagaKeyPrefix); ok && h.finished() {
			// The log's entry for a saga that ended marks it ended; any
			// other is weighed against the bucket's (mergeStored).
			if v, inLog := logged[id]; (!inLog || string(v.value) == endedValue) && messages.CheckToken("saga_id", id) == nil {
				if err := c.engine.RestoreFinished(h.status, h.tick); err != nil {
					return nil, 0, 0, 0, err
				}
				finished++
				continue
			}
		}
		if h.key == messages.ClockKey || strings.HasPrefix(h.key, messages.DefinitionKeyPrefix) || strings.HasPrefix(h.key, messages.SagaKeyPrefix) {
			read = append(read, messages.BucketSubject(h.key))
		}
	}
	entries, err := c.bucketValues(ctx, read)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	bucket = map[string]bucketSaga{}
	for _, entry := range entries {
		key, value := entry.key, entry.value
		switch {
		case key == messages.ClockKey:
			c.clock = entry.rev
			ck, err := parseClock(value)
			if err != nil {
				c.log.Error("stored clock unreadable: the clock starts at the latest tick of a saga in flight (0 if none), and moves with the next tick sent",
					"value", messages.Clip(string(value)), "err", err)
				continue
			}
			tick, round = ck.Tick, ck.Round
		case strings.HasPrefix(key, messages.DefinitionKeyPrefix):
			// A stored definition the coordinator cannot take is skipped,
			// like a stored saga: the sagas of its version then stay in
			// the bucket, skipped too, for an operator.
			if err := c.restoreDefinition(key, value, subs); err != nil {
				c.log.Error("stored definition skipped", "key", messages.Clip(key), "err", err)
			}
		case strings.HasPrefix(key, messages.SagaKeyPrefix):
			// A stored saga the coordinator cannot take is skipped and
			// stays where it is for an operator: it never stops the
			// recovery of the others.
			id := strings.TrimPrefix(key, messages.SagaKeyPrefix)
			if err := messages.CheckToken("saga_id", id); err != nil {
				c.log.Error("stored saga skipped: its key breaks the identifier rule", "key", messages.Clip(key), "err", err)
				continue
			}
			x, err := wirejson.DecodeExecution(value)
			if err != nil {
				c.log.Error("stored saga skipped: unreadable", "saga_id", id, "err", err)
				continue
			}
			if x.ID != id {
				c.log.Error("stored saga skipped: its id is not its key's", "saga_id", id, "stored_id", messages.Clip(x.ID))
				continue
			}
			bucket[id] = bucketSaga{x: x, rev: entry.rev}
		}
	}
	return bucket, finished, tick, round, nil
}
