package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Bounds of a list of finished sagas, which are read from the bucket.
const (
	// DefaultFinishedList is how many finished sagas a list request with
	// no limit answers.
	DefaultFinishedList = 100
	// MaxFinishedList is the most finished sagas one list answers.
	MaxFinishedList = 1000
	// finishedListWait bounds the read of the bucket for one list.
	finishedListWait = 10 * time.Second
	// maxFinishedLists bounds the lists of finished sagas read at once,
	// each a read of the whole bucket; a list asked beyond it is refused.
	maxFinishedLists = 4
)

// errListsBusy is answered to a list of finished sagas asked while
// maxFinishedLists are being read.
var errListsBusy = fmt.Errorf("%d lists of finished sagas at once, the limit; ask again: %w", maxFinishedLists, messages.ErrBusy)

// listFinished answers a list request for the sagas that finished with st
// (completed, rolled_back or timed_out): they are in the bucket only, kept
// for the retention. It answers the latest limit of them (DefaultFinishedList
// when limit is 0, at most MaxFinishedList), oldest first, from a read that
// the end of ctx, the term's, cuts short. While maxFinishedLists others
// are being read, or MaxBucketReads reads of any kind, it answers busy at
// once instead.
func (c *Coordinator) listFinished(ctx context.Context, m *nats.Msg, st saga.Status, limit int) {
	refuse := func(err error) {
		c.respond(m, messages.ListResponse{V: messages.Version, Error: wireError(fmt.Errorf("list %s: %w", st, err))})
	}
	select {
	case c.lists <- struct{}{}:
	default:
		refuse(errListsBusy)
		return
	}
	if limit <= 0 {
		limit = DefaultFinishedList
	}
	limit = min(limit, MaxFinishedList)
	err := c.reads.start(ctx, finishedListWait, func(ctx context.Context) {
		defer func() { <-c.lists }()
		sagas, err := c.readFinished(ctx, st, limit)
		if err != nil {
			refuse(readError(ctx, err))
			return
		}
		c.respond(m, messages.ListResponse{V: messages.Version, Sagas: sagas})
	})
	if err != nil {
		<-c.lists
		refuse(err)
	}
}

// readFinished returns the last limit sagas of the bucket with status st,
// in the bucket's order.
func (c *Coordinator) readFinished(ctx context.Context, st saga.Status, limit int) ([]json.RawMessage, error) {
	w, err := c.kv.Watch(ctx, messages.SagaKeyPrefix+"*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	ring := make([]json.RawMessage, 0, limit)
	next := 0
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("bucket watch ended")
			}
			if e == nil { // every stored saga seen
				return append(ring[next:], ring[:next]...), nil
			}
			var x struct {
				ID     string      `json:"saga_id"`
				Status saga.Status `json:"status"`
			}
			// An entry that is not the state of the saga its key names
			// is left out, as status refuses it (storedSaga).
			if json.Unmarshal(e.Value(), &x) != nil || x.Status != st || messages.SagaKey(x.ID) != e.Key() {
				continue
			}
			if len(ring) < limit {
				ring = append(ring, json.RawMessage(e.Value()))
				continue
			}
			ring[next] = json.RawMessage(e.Value())
			next = (next + 1) % limit
		}
	}
}
