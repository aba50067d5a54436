package coordinator

// The saga log: where the active sagas are stored
//
// A saga that is still active is stored in the saga log, the stream
// [messages.SagaLogStream] on its one subject, many sagas a message: a
// commit writes the sagas it must store in as few messages as fit, each
// saga an entry keyed by its id (package kvlog's message format). A saga
// that ends is stored in the bucket under its key, where requests look it
// up by id and where it expires after Options.Retention; the log's next
// message marks it ended ([endedValue]), so that its older entries in the
// log are never taken for it again.
//
// Which state is a saga's, at recovery ([mergeStored]): its last entry in
// the log, unless that marks it ended, or the bucket holds it ended at the
// same command or a later one (a seq at least the entry's). A saga ends at
// the command of its last logged state or after it, and a failed saga that
// an operator retries sends a new command, with a higher seq, before it is
// logged again. The bucket also holds sagas that coordinators before the
// log stored there while they were active: read when the log holds nothing
// of them.
//
// Each message is published expecting the log's last sequence to be the
// one this coordinator wrote or read last: a coordinator whose term is over
// cannot write after the one that took over.
//
// The log grows by every commit. When it holds more than twice the bytes
// of the active sagas' last entries, plus [compactFloor], every active saga
// is written again at its end and the messages before are purged
// ([Coordinator.compact]).

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// endedValue is the value of a saga's entry in the log once the saga is
// stored ended in the bucket.
const endedValue = `"ended"`

// compactFloor is the bytes of entries the log may hold beyond twice the
// active sagas' before it is compacted.
var compactFloor int64 = 16 << 20

// markEndedWithin bounds how long the log may go without marking ended a
// saga stored ended in the bucket, when no input comes.
const markEndedWithin = 100 * time.Millisecond

// sagaLog is the coordinator's view of the saga log: what it wrote and
// read of it in this term.
type sagaLog struct {
	// last is the sequence of the last message written or read.
	last uint64
	// bytes counts the entries' keys and values the log holds (since its
	// last compaction); liveBytes, those of the entries in live.
	bytes, liveBytes int64
	// live holds the last entry of each saga whose last entry is a state.
	live map[string]logEntry
	// ended holds the sagas stored ended in the bucket since the last
	// message, whose entries marking them ended go in the next.
	ended []string
	// skipped holds the entries a recovery could not take (a value that
	// is not a saga, a saga of an unknown definition): they stay in the
	// log for an operator, written again as they are by every compaction.
	// raw is a recovery's scratch: the entry of each saga taken from the
	// log.
	skipped, raw map[string]json.RawMessage
}

// logEntry is where a saga's last entry in the log is, and its size.
type logEntry struct {
	seq  uint64
	size int64
}

func newSagaLog() *sagaLog {
	return &sagaLog{live: map[string]logEntry{}, skipped: map[string]json.RawMessage{}, raw: map[string]json.RawMessage{}}
}

// skip keeps the entry value of saga id, which the recovery could not
// take, in the log for an operator.
func (l *sagaLog) skip(id string, value json.RawMessage) {
	if value != nil {
		l.skipped[id] = value
	}
}

// logged reports whether the log holds a state of saga id.
func (l *sagaLog) logged(id string) bool {
	_, ok := l.live[id]
	return ok
}

// due reports whether the log should be compacted.
func (l *sagaLog) due() bool { return l.bytes > 2*l.liveBytes+compactFloor }

// took notes that the message at seq holds es: the log's last message.
func (l *sagaLog) took(seq uint64, es []kvlog.Entry) {
	l.last = seq
	for _, e := range es {
		size := int64(len(e.Key) + len(e.Value))
		l.bytes += size
		if old, ok := l.live[e.Key]; ok {
			l.liveBytes -= old.size
			delete(l.live, e.Key)
		}
		if string(e.Value) != endedValue {
			l.live[e.Key] = logEntry{seq: seq, size: size}
			l.liveBytes += size
		}
	}
}

// logMessage is a message of the log published and not yet acknowledged.
type logMessage struct {
	entries []kvlog.Entry
	ack     jetstream.PubAckFuture
}

// writeLog writes es to the log, the entries marking the sagas of l.ended
// first, in as few messages as fit; it returns once every message is
// stored. The messages are published at once, each expecting the one
// before it as the log's last.
func (c *Coordinator) writeLog(ctx context.Context, es []kvlog.Entry) error {
	l := c.sagas
	if len(l.ended) > 0 {
		marks := make([]kvlog.Entry, len(l.ended), len(l.ended)+len(es))
		for i, id := range l.ended {
			marks[i] = kvlog.Entry{Key: id, Value: []byte(endedValue)}
		}
		es = append(marks, es...)
	}
	if len(es) == 0 {
		return nil
	}
	maxBytes := c.dataRoom()
	var ms []logMessage
	for start := 0; start < len(es); {
		// A message's overhead is 27 bytes, an entry's 22 besides its
		// key and value; a saga's state is far below the limit.
		size, end := 32, start
		for end < len(es) && (end == start || size+22+len(es[end].Key)+len(es[end].Value) <= maxBytes) {
			size += 22 + len(es[end].Key) + len(es[end].Value)
			end++
		}
		m := nats.NewMsg(messages.SagaLogSubject)
		m.Data = kvlog.AppendMessage(make([]byte, 0, size), "", es[start:end])
		m.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(l.last+uint64(len(ms)), 10))
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("store sagas: %w", err)
		}
		ms = append(ms, logMessage{entries: es[start:end], ack: f})
		start = end
	}
	for _, m := range ms {
		ack, err := wait(ctx, m.ack)
		if err != nil {
			return fmt.Errorf("store sagas: %w", err)
		}
		l.took(ack.Sequence, m.entries)
	}
	l.ended = l.ended[:0]
	return nil
}

// markEnded writes the marks of the sagas stored ended since the last
// message of the log, as a term's loop stops: a saga whose end expires
// from the bucket is then not taken as active from its older entries by a
// coordinator recovering later. A failure is logged: the recovery marks
// them too. With the connection down it does not wait for the server.
func (c *Coordinator) markEnded() {
	if len(c.sagas.ended) == 0 {
		return
	}
	if !c.nc.IsConnected() {
		c.log.Warn("saga log: the sagas that ended not marked so (not connected to NATS); the next recovery marks them", "sagas", len(c.sagas.ended))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.writeLog(ctx, nil); err != nil {
		c.log.Warn("saga log: the sagas that ended not marked so; the next recovery marks them", "sagas", len(c.sagas.ended), "err", err)
	}
}

// minTime returns the earlier of a (when ok) and b.
func minTime(a time.Time, ok bool, b time.Time) time.Time {
	if ok && a.Before(b) {
		return a
	}
	return b
}

// logValue is a saga's last entry in the log, as a recovery reads it.
type logValue struct {
	value []byte
	seq   uint64 // of the message that holds it
}

// readLog reads the whole log into l, and returns the last entry of each
// saga in it.
func (c *Coordinator) readLog(ctx context.Context) (map[string]logValue, error) {
	l := c.sagas
	last := map[string]logValue{}
	err := kvlog.Scan(ctx, c.js, messages.SagaLogStream, messages.SagaLogSubject, func(seq uint64, es []kvlog.Entry, err error) {
		l.last = seq
		if err != nil {
			c.log.Error("saga log: a malformed message skipped", "seq", seq, "err", err)
			return
		}
		l.took(seq, es)
		for _, e := range es {
			last[e.Key] = logValue{value: e.Value, seq: seq}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read the saga log: %w", err)
	}
	if l.last == 0 {
		// An empty log may still have had messages, all purged: the next
		// message must expect the stream's last sequence.
		st, err := c.js.Stream(ctx, messages.SagaLogStream)
		if err != nil {
			return nil, fmt.Errorf("read the saga log: %w", err)
		}
		l.last = st.CachedInfo().State.LastSeq
	}
	return last, nil
}

// bucketSaga is a saga the bucket holds, and its revision.
type bucketSaga struct {
	x   saga.Execution
	rev uint64
}

// mergeStored returns the stored state of each saga, from the bucket and
// the log's last entries (see the top of this file), and sets the bucket
// revisions the coordinator guards its writes with. It adds to l.ended the
// sagas the log holds as active that ended in the bucket. A log entry that
// does not decode, or names another saga, is skipped with an error logged:
// the bucket's end is taken when it holds one, and the entry otherwise
// kept in the log for an operator.
func (c *Coordinator) mergeStored(bucket map[string]bucketSaga, logged map[string]logValue) []saga.Execution {
	l := c.sagas
	stored := make([]saga.Execution, 0, len(bucket)+len(logged))
	ids := make([]string, 0, len(logged))
	for id := range logged {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		v := logged[id]
		if string(v.value) == endedValue {
			continue
		}
		b, inBucket := bucket[id]
		x, err := decodeLogged(id, v.value)
		if err != nil {
			c.log.Error("saga log: a stored saga skipped", "saga_id", messages.Clip(id), "seq", v.seq, "err", err)
			if inBucket && b.x.Status.Terminal() {
				// It ended: the bucket says how.
				l.drop(id)
				l.ended = append(l.ended, id)
			} else {
				l.skip(id, v.value)
			}
			continue
		}
		if inBucket && b.x.Status.Terminal() && b.x.Seq >= x.Seq {
			l.drop(id)
			l.ended = append(l.ended, id)
			continue
		}
		if inBucket {
			c.revs[id] = b.rev
			delete(bucket, id)
		}
		l.raw[id] = v.value
		stored = append(stored, x)
	}
	for _, b := range bucket {
		stored = append(stored, b.x)
		if !b.x.Status.Terminal() || b.x.Status == saga.Failed {
			c.revs[b.x.ID] = b.rev
		}
	}
	return stored
}

// drop forgets the log's state of saga id.
func (l *sagaLog) drop(id string) {
	if e, ok := l.live[id]; ok {
		l.liveBytes -= e.size
		delete(l.live, id)
	}
}

// decodeLogged decodes the log's state of saga id.
func decodeLogged(id string, value []byte) (saga.Execution, error) {
	if err := messages.CheckToken("saga_id", id); err != nil {
		return saga.Execution{}, err
	}
	x, err := wirejson.DecodeExecution(value)
	if err != nil {
		return saga.Execution{}, err
	}
	if x.ID != id {
		return saga.Execution{}, fmt.Errorf("its id %s is not its key's: %w", messages.Quote(x.ID), messages.ErrBadRequest)
	}
	if x.Status.Terminal() {
		return saga.Execution{}, fmt.Errorf("status %s in the log of active sagas: %w", x.Status, messages.ErrBadRequest)
	}
	return x, nil
}

// compact writes every saga the log holds a state of again, as it is now,
// at the log's end, then purges the messages before: called between
// commits, when the log is due.
func (c *Coordinator) compact(ctx context.Context) error {
	l := c.sagas
	cut := l.last + 1
	ids := make([]string, 0, len(l.live))
	for id := range l.live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var buf []byte
	es := make([]kvlog.Entry, 0, len(ids))
	for _, id := range ids {
		if raw, ok := l.skipped[id]; ok {
			es = append(es, kvlog.Entry{Key: id, Value: raw})
			continue
		}
		x, err := c.engine.Get(id)
		if err != nil || x.Status.Terminal() {
			// Not active in the engine: its end is being stored.
			continue
		}
		start := len(buf)
		if buf, err = wirejson.AppendExecution(buf, &x); err != nil {
			return fmt.Errorf("compact the saga log: encode saga %s: %w", id, err)
		}
		es = append(es, kvlog.Entry{Key: id, Value: buf[start:len(buf):len(buf)]})
	}
	before := l.bytes
	if err := c.writeLog(ctx, es); err != nil {
		return fmt.Errorf("compact the saga log: %w", err)
	}
	st, err := c.js.Stream(ctx, messages.SagaLogStream)
	if err == nil {
		err = st.Purge(ctx, jetstream.WithPurgeSequence(cut))
	}
	if err != nil {
		return fmt.Errorf("compact the saga log: purge before %d: %w", cut, err)
	}
	l.bytes -= before
	c.log.Info("saga log compacted", "sagas", len(es), "bytes", l.bytes, "purged_bytes", before)
	return nil
}
