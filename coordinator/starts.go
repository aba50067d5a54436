package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Starts, alone (natsaga.start.<saga>) or many in one request
// (messages.StartBatch on natsaga.starts). A simulation tick starts
// thousands of sagas; one request each costs a round trip, a read of the
// bucket for each client-chosen id and an input of the loop each. A batch
// costs one of each: its ids are looked up in one read of the bucket, and
// its starts go into the engine as one input, in the order given. A start
// alone is a batch of one, so each start of a batch is decided exactly as
// it would be alone, and answered at its place.

// startBatch is a batch of starts being answered.
type startBatch struct {
	starts []messages.BatchedStart
	// sizes are the starts' bytes as received, for admission.
	sizes   []int
	results []messages.StartResponse
	// live are the indexes of the starts still to decide.
	live []int
	// deleted marks the starts whose id's bucket entry is a marker (see
	// answerFinishedStarts).
	deleted map[int]bool
	// trace is the request whose trace context the sagas' spans continue;
	// finish answers it with results.
	trace  *nats.Msg
	finish func()
}

func (b *startBatch) answer(i int, resp messages.StartResponse) {
	resp.V = messages.Version
	b.results[i] = resp
}

func (b *startBatch) refuse(i int, err error) {
	b.answer(i, messages.StartResponse{Error: wireError(err)})
}

// onStarts answers a StartBatch: a request over messages.MaxPayload, a
// malformed one, one with no start or more than messages.MaxStarts, and
// any while the coordinator holds its limit of sagas in flight, are
// refused whole; otherwise each start is
// checked, looked up and started on its own.
func (c *Coordinator) onStarts(ctx context.Context, m *nats.Msg) {
	refuse := func(err error) {
		c.warns.Warn("bad start batch", "err", err)
		c.respond(m, messages.StartBatchResponse{V: messages.Version, Error: wireError(err)})
	}
	if len(m.Data) > messages.MaxPayload {
		refuse(fmt.Errorf("start batch of %d bytes, limit %d: %w", len(m.Data), messages.MaxPayload, messages.ErrTooLarge))
		return
	}
	if err := messages.CheckUTF8(m.Data); err != nil {
		refuse(fmt.Errorf("start batch: %w", err))
		return
	}
	raw, err := wirejson.DecodeStartBatch(m.Data)
	if err != nil {
		refuse(fmt.Errorf("start batch: %w: %w", messages.ErrBadRequest, err))
		return
	}
	if raw.V != messages.Version {
		refuse(fmt.Errorf("start batch: version %d, want %d: %w", raw.V, messages.Version, messages.ErrVersion))
		return
	}
	if n := len(raw.Starts); n == 0 || n > messages.MaxStarts {
		refuse(fmt.Errorf("start batch of %d starts: 1 to %d: %w", n, messages.MaxStarts, messages.ErrBadRequest))
		return
	}
	if n, most := len(raw.Starts), messages.MaxStartsFor(c.nc.MaxPayload()); n > most {
		refuse(fmt.Errorf("start batch of %d starts: the answer to more than %d could exceed the server's payload limit of %d bytes: %w",
			n, most, c.nc.MaxPayload(), messages.ErrTooLarge))
		return
	}
	if err := c.busy(1); err != nil {
		c.respond(m, messages.StartBatchResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	n := len(raw.Starts)
	b := &startBatch{starts: make([]messages.BatchedStart, n), sizes: make([]int, n), results: make([]messages.StartResponse, n), trace: m}
	b.finish = func() {
		c.respond(m, messages.StartBatchResponse{V: messages.Version, Results: fitStartResults(b.results, c.nc.MaxPayload())})
	}
	limit := c.nc.MaxPayload() / 4
	for i, r := range raw.Starts {
		b.sizes[i] = len(r)
		if err := checkBatchedStart(r, &b.starts[i], limit); err != nil {
			b.refuse(i, err)
			continue
		}
		b.live = append(b.live, i)
	}
	c.lookUpAndStart(ctx, b)
}

// lookUpAndStart answers from the bucket the starts of b whose id names a
// finished saga, and starts the others. Ids chosen by the client may name
// sagas finished long ago, only in the bucket: one read, off this
// goroutine, looks them all up.
func (c *Coordinator) lookUpAndStart(ctx context.Context, b *startBatch) {
	ids := slices.ContainsFunc(b.live, func(i int) bool { return b.starts[i].SagaID != "" })
	if !ids {
		c.enqueueStarts(ctx, b)
		return
	}
	err := c.reads.start(ctx, bucketWait, func(read context.Context) {
		c.answerFinishedStarts(read, b)
		c.enqueueStarts(ctx, b)
	})
	if err != nil {
		live := b.live[:0]
		for _, i := range b.live {
			if b.starts[i].SagaID != "" {
				b.refuse(i, err)
			} else {
				live = append(live, i)
			}
		}
		b.live = live
		c.enqueueStarts(ctx, b)
	}
}

// checkBatchedStart decodes raw into s and checks it as a start request
// alone is checked: its saga type and id are tokens, and it takes at most
// limit bytes, a quarter of the server's payload limit.
func checkBatchedStart(raw json.RawMessage, s *messages.BatchedStart, limit int64) error {
	var err error
	if *s, err = wirejson.DecodeBatchedStart(raw); err != nil {
		return fmt.Errorf("start: %w: %w", messages.ErrBadRequest, err)
	}
	if err := messages.CheckToken("saga", s.Saga); err != nil {
		return err
	}
	if s.SagaID != "" {
		if err := messages.CheckToken("saga_id", s.SagaID); err != nil {
			return err
		}
	}
	if int64(len(raw)) > limit {
		return fmt.Errorf("start of %d bytes, limit %d (a quarter of the server's payload limit): %w", len(raw), limit, messages.ErrTooLarge)
	}
	return nil
}

// answerFinishedStarts answers, from one read of the bucket, the starts of
// b whose id names a finished saga, and takes them out of b.live. A read
// that fails is the answer of every start with an id: a saga it could not
// see may be there, and must not be started again.
func (c *Coordinator) answerFinishedStarts(ctx context.Context, b *startBatch) {
	at := map[string][]int{} // bucket subject → starts naming it
	var subjects []string
	for _, i := range b.live {
		if id := b.starts[i].SagaID; id != "" {
			subj := messages.BucketSubject(messages.SagaKey(id))
			if at[subj] == nil {
				subjects = append(subjects, subj)
			}
			at[subj] = append(at[subj], i)
		}
	}
	finished := map[int]bool{}
	err := c.lastOf(ctx, subjects, func(m *jetstream.RawStreamMsg) {
		if deleted(m.Header) {
			// The id is a saga's whose entry was deleted or expired:
			// refused on the loop unless that saga still runs there
			// (enqueueStarts).
			for _, i := range at[m.Subject] {
				if b.deleted == nil {
					b.deleted = map[int]bool{}
				}
				b.deleted[i] = true
			}
			return
		}
		x, err := storedSaga(b.starts[at[m.Subject][0]].SagaID, m.Data)
		if err != nil {
			// Not a saga: starting one under its key would end in a
			// write refused, so the start is refused now.
			for _, i := range at[m.Subject] {
				b.refuse(i, err)
				finished[i] = true
			}
			return
		}
		if !x.Status.Terminal() {
			return
		}
		for _, i := range at[m.Subject] {
			if want := b.starts[i].Saga; want != x.Saga && want != x.Definition {
				b.refuse(i, saga.IDTaken(x.ID, x.Saga, b.starts[i].Saga))
			} else {
				b.answer(i, messages.StartResponse{SagaID: x.ID, Status: string(x.Status), Existed: true})
			}
			finished[i] = true
		}
	})
	live := b.live[:0]
	for _, i := range b.live {
		switch {
		case finished[i]:
		case err != nil && b.starts[i].SagaID != "":
			b.refuse(i, c.readError(ctx, err))
		default:
			live = append(live, i)
		}
	}
	b.live = live
}

// errDeletedID refuses a start whose id names a saga whose bucket entry
// was deleted or has expired, and that the coordinator does not hold.
var errDeletedID = errors.New("the saga id was a saga's whose state was deleted or has expired, and whose agents' records may still answer for it: use another id")

// kvOperationHeader marks a bucket entry deleted or purged.
const kvOperationHeader = "KV-Operation"

// deleted reports whether a bucket message with header h is a marker: of
// a key deleted or purged, or of a value removed by its TTL.
func deleted(h nats.Header) bool {
	return h.Get(kvOperationHeader) != "" || h.Get(jetstream.MarkerReasonHeader) != ""
}

// lastOf calls each with the last message of every subject of the bucket
// that has one, read in one request.
func (c *Coordinator) lastOf(ctx context.Context, subjects []string, each func(*jetstream.RawStreamMsg)) error {
	msgs, err := jetstreamext.GetLastMsgsFor(ctx, c.js, messages.SagaBucketStream, subjects)
	if err != nil {
		return fmt.Errorf("read %d sagas: %w", len(subjects), err)
	}
	for m, err := range msgs {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %d sagas: %w", len(subjects), err)
		}
		each(m)
	}
	return nil
}

// enqueueStarts starts the live starts of b in one input of the loop, in
// their order, and answers b once the batch that holds them is stored; a
// batch with none left is answered at once.
func (c *Coordinator) enqueueStarts(ctx context.Context, b *startBatch) {
	if len(b.live) == 0 {
		b.finish()
		return
	}
	c.enqueue(ctx, func(_ time.Time, out *saga.Outbox) func(error) {
		var started, terminal []int
		room := newStartsRoom(c.nc.MaxPayload(), b.results)
		for _, i := range b.live {
			s := &b.starts[i]
			if busy := c.admits(b.sizes[i]); busy != nil {
				// A start of a saga held is answered with it.
				if _, err := c.engine.Get(s.SagaID); s.SagaID == "" || err != nil {
					b.refuse(i, busy)
					continue
				}
			}
			if b.deleted[i] {
				if _, err := c.engine.Get(s.SagaID); err != nil {
					// Its agents may still hold the records of the saga
					// the id was, which would answer for a new one.
					b.refuse(i, fmt.Errorf("start %s: %w", s.SagaID, errDeletedID))
					continue
				}
			}
			if !room.take(s.SagaID) {
				b.refuse(i, errNoRoom)
				continue
			}
			existed := s.SagaID != "" && c.engine.Holds(s.SagaID)
			x, err := c.engine.StartWith(s.SagaID, s.Saga, s.Context, saga.StartOptions{Rank: s.Rank, Tick: s.Tick}, out)
			switch {
			case errors.Is(err, saga.ErrTerminal):
				terminal = append(terminal, i)
			case err != nil:
				c.warns.Warn("start refused", "saga", s.Saga, "err", err)
				b.refuse(i, err)
				room.giveBack(s.SagaID)
			default:
				c.traceStart(b.trace, x, len(b.starts) > 1)
				b.answer(i, messages.StartResponse{SagaID: x.ID, Status: string(x.Status), Existed: existed})
				started = append(started, i)
			}
		}
		return func(err error) {
			if err != nil {
				for _, i := range started {
					if id := b.starts[i].SagaID; id != "" {
						// Not stored, and the term ends. A start that
						// names its saga starts it once however often it
						// is sent: busy says send it again.
						b.refuse(i, notStored("start of saga "+id, err))
					} else {
						b.refuse(i, err)
					}
				}
			}
			if len(terminal) == 0 {
				b.finish()
				return
			}
			// Sagas that ended since the lookup: answered from the
			// bucket, once the batch that may hold their end is stored.
			b.live = terminal
			if err := c.reads.start(ctx, bucketWait, func(read context.Context) {
				c.answerFinishedStarts(read, b)
				for _, i := range b.live {
					b.refuse(i, fmt.Errorf("start %s: %w", b.starts[i].SagaID, saga.ErrTerminal))
				}
				b.finish()
			}); err != nil {
				for _, i := range terminal {
					b.refuse(i, err)
				}
				b.finish()
			}
		}
	})
}

// A batch's answer must reach its client whole: the ids of the sagas it
// started are known nowhere else when the client gave none. Each result is
// counted at the least it can take: a saga's id and the longest status, or
// a refusal with its message cut to [cutMessage], at most
// messages.StartResultRoom bytes. A batch of more starts than
// messages.MaxStartsFor the payload limit is refused whole (onStarts); a
// start is started only while the least of every result still fits
// (startsRoom), else answered busy; and the answer cuts the refusals'
// messages when it would not fit whole (fitStartResults).

// cutMessage replaces a refusal's message in an answer with no room for it.
const cutMessage = "message cut: the answer had no room for it"

// errNoRoom refuses a start whose result the batch's answer has no room
// for.
var errNoRoom = fmt.Errorf("%w: no room for this start's result in the batch's answer; send it again", messages.ErrBusy)

// answerEnvelope is the size of a batch's answer without its results.
const answerEnvelope = int64(len(`{"v":1,"results":[]}`))

// leastRefusal is the size of a refusal with its message cut, and its comma.
var leastRefusal = resultSize(messages.StartResponse{V: messages.Version,
	Error: &messages.WireError{Code: messages.CodeBadRequest, Message: cutMessage}})

// leastStarted is the size of a started saga's result, with id (a UUID
// when the start gives none) and the longest status, and its comma:
// counted, not encoded, as it is asked once a start on the loop. An id is
// a token, which JSON writes as it is.
func leastStarted(id string) int {
	if id == "" {
		return startedBase + len("00000000-0000-0000-0000-000000000000")
	}
	return startedBase + len(id)
}

// startedBase is the size of a started saga's result without its id: the
// longest, of a saga there already (96 bytes with a UUID, the room
// messages.StartResultRoom gives).
var startedBase = resultSize(messages.StartResponse{V: messages.Version, SagaID: "x", Status: string(saga.Compensating), Existed: true}) - 1

func resultSize(r messages.StartResponse) int {
	data, _ := json.Marshal(r) // a StartResponse always encodes
	return len(data) + 1
}

// startsRoom counts a batch answer's least size as its starts are decided.
type startsRoom struct{ used, limit int64 }

// newStartsRoom counts results, those decided and those still to decide,
// at their least.
func newStartsRoom(limit int64, results []messages.StartResponse) startsRoom {
	r := startsRoom{used: answerEnvelope, limit: limit}
	for _, res := range results {
		if res.Error == nil && res.SagaID != "" {
			r.used += int64(leastStarted(res.SagaID))
		} else {
			r.used += int64(leastRefusal)
		}
	}
	return r
}

// take counts a start with id (the one given, or "") as one that may
// start a saga, and reports whether the answer has room for it.
func (r *startsRoom) take(id string) bool {
	grow := int64(leastStarted(id) - leastRefusal)
	if r.used+grow > r.limit {
		return false
	}
	r.used += grow
	return true
}

// giveBack uncounts a start take counted that was refused.
func (r *startsRoom) giveBack(id string) { r.used -= int64(leastStarted(id) - leastRefusal) }

// fitStartResults returns results, their refusals' messages cut to
// cutMessage if the answer would not fit limit whole.
func fitStartResults(results []messages.StartResponse, limit int64) []messages.StartResponse {
	// An upper bound first, counted: JSON writes a byte of a message as
	// six at most. Encoding every result is for an answer near the limit.
	bound := answerEnvelope
	for _, r := range results {
		bound += int64(startedBase + len(r.SagaID) + len(r.Status))
		if r.Error != nil {
			bound += int64(leastRefusal + len(r.Error.Code) + 6*len(r.Error.Message))
		}
	}
	if bound <= limit {
		return results
	}
	size := answerEnvelope
	for _, r := range results {
		size += int64(resultSize(r))
	}
	if size <= limit {
		return results
	}
	cut := slices.Clone(results)
	for i, r := range cut {
		if r.Error != nil {
			cut[i].Error = &messages.WireError{Code: r.Error.Code, Message: cutMessage}
		}
	}
	return cut
}
