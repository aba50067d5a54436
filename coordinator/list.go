package coordinator

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
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
// when limit is 0, at most MaxFinishedList), fewer when more would not fit
// one answer, oldest first, from a read that
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
		sagas, more, err := c.readFinished(ctx, st, limit)
		if err != nil {
			refuse(c.readError(ctx, err))
			return
		}
		c.respond(m, messages.ListResponse{V: messages.Version, Sagas: sagas, More: more})
	})
	if err != nil {
		<-c.lists
		refuse(err)
	}
}

// readFinished returns the last sagas of the bucket with status st, in
// the bucket's order: at most limit of them, and no more than fit one
// answer under the server's payload limit; more reports that the bucket
// holds more of them. It reads the bucket's headers (latestHeads), then
// the values of the latest sagas whose status header is st, newest
// first, a batch at a time, until it has one more than the page holds;
// an entry without the headers (written before them) has its value read
// to know its status. A latest saga too large for any answer is an error
// (too_large).
func (c *Coordinator) readFinished(ctx context.Context, st saga.Status, limit int) (sagas []json.RawMessage, more bool, err error) {
	// The index names the latest such sagas, when it holds enough; when
	// one of them is gone or changed, the headers say which are.
	if subjects, ok := c.latestEnded.subjects(st, limit+1); ok {
		sagas, more, all, err := c.readFinishedOf(ctx, subjects, st, limit)
		if err != nil || all {
			return sagas, more, err
		}
	}
	subjects, err := c.latestHeads(ctx, st, limit+1)
	if err != nil {
		return nil, false, err
	}
	sagas, more, _, err = c.readFinishedOf(ctx, subjects, st, limit)
	return sagas, more, err
}

// readFinishedOf is readFinished of the sagas of subjects, those whose
// headers say they ended with st or have no headers, in the bucket's
// order; all reports that each subject it read held a saga with status
// st.
func (c *Coordinator) readFinishedOf(ctx context.Context, subjects []string, st saga.Status, limit int) (sagas []json.RawMessage, more, all bool, err error) {
	// found holds the sagas read, newest batch first; a batch asks for
	// what the page still lacks (at least a few, since some may not
	// match).
	type sagaValue struct {
		id    string
		entry bucketEntry
	}
	budget := c.answerBudget()
	var found []sagaValue
	size := 0
	// A batch asks for at most step values, from 16, doubling: the
	// values read before the answer's budget is spent are never many more
	// than it holds, whatever a saga's size (a thousand sagas of 380 KB
	// read at once cut the coordinator off as a slow consumer).
	step := 16
	all = true
	for end := len(subjects); end > 0 && len(found) <= limit && size < budget; step *= 2 {
		begin := max(0, end-min(max(limit+1-len(found), 16), step))
		entries, err := c.bucketValues(ctx, subjects[begin:end])
		if err != nil {
			return nil, false, false, err
		}
		before := len(found)
		for _, e := range entries {
			var x struct {
				ID     string      `json:"saga_id"`
				Status saga.Status `json:"status"`
			}
			// An entry that is not the state of the saga its key names
			// is left out, as status refuses it (storedSaga).
			if json.Unmarshal(e.value, &x) != nil || x.Status != st || messages.SagaKey(x.ID) != e.key {
				continue
			}
			found = append(found, sagaValue{x.ID, e})
			size += len(e.value) + 1
		}
		all = all && len(found)-before == end-begin
		end = begin
	}
	slices.SortFunc(found, func(a, b sagaValue) int { return cmp.Compare(a.entry.rev, b.entry.rev) })
	page := latestFitting{limit: limit, budget: budget}
	for _, f := range found {
		page.add(f.id, f.entry.value)
	}
	sagas, err = page.sagas()
	return sagas, len(found) > len(sagas), all, err
}

// latestHeads returns the bucket subjects of the latest sagas whose
// headers say they finished with st, or that have no headers, in the
// bucket's order: at least limit of the first kind when the bucket holds
// that many. It reads the headers of the bucket's last messages, a window
// that grows fourfold until it holds limit of them or reaches the
// stream's start, so that the latest sagas of a bucket that keeps
// hundreds of thousands are found without reading them all. Within the
// window, a key's last message counts; a key whose last message is older
// than the window is older than every saga in it.
func (c *Coordinator) latestHeads(ctx context.Context, st saga.Status, limit int) ([]string, error) {
	stream, err := c.js.Stream(ctx, messages.SagaBucketStream)
	if err != nil {
		return nil, fmt.Errorf("read the bucket: %w", err)
	}
	first, last := stream.CachedInfo().State.FirstSeq, stream.CachedInfo().State.LastSeq
	if last == 0 {
		return nil, nil
	}
	for window := uint64(max(4*limit, 256)); ; window *= 4 {
		from := first
		if last-first+1 > window {
			from = last - window + 1
		}
		latest := map[string]bucketHead{}
		gone := map[string]bool{}
		err := c.readHeads(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{messages.BucketSubject(messages.SagaKeyPrefix + "*")},
			DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:    from,
		}, func(h bucketHead, deleted bool) {
			latest[h.key], gone[h.key] = h, deleted
		})
		if err != nil {
			return nil, err
		}
		var heads []bucketHead
		matched := 0
		for key, h := range latest {
			if gone[key] || (h.status != st && h.status.Valid()) {
				continue
			}
			if h.status == st {
				matched++
			}
			heads = append(heads, h)
		}
		if matched >= limit || from == first {
			slices.SortFunc(heads, func(a, b bucketHead) int { return cmp.Compare(a.rev, b.rev) })
			subjects := make([]string, len(heads))
			for i, h := range heads {
				subjects[i] = messages.BucketSubject(h.key)
			}
			return subjects, nil
		}
	}
}

// answerBudget is the room for sagas in one answer: the server's payload
// limit less room for the envelope, the cursor and the separators.
func (c *Coordinator) answerBudget() int { return int(c.nc.MaxPayload()) - 512 }

// latestFitting keeps the latest sagas added, oldest first: at most limit
// of them, and at most budget bytes with a separator each.
type latestFitting struct {
	limit, budget int
	kept          []json.RawMessage
	size          int
	// tooLarge names the latest saga added when it alone is over the
	// budget; it is cleared by a later one that fits.
	tooLarge string
	tooSize  int
}

func (l *latestFitting) add(id string, value []byte) {
	n := len(value) + 1
	if n > l.budget {
		l.kept, l.size = l.kept[:0], 0
		l.tooLarge, l.tooSize = id, len(value)
		return
	}
	l.tooLarge = ""
	l.kept = append(l.kept, json.RawMessage(value))
	l.size += n
	drop := 0
	for len(l.kept)-drop > l.limit || l.size > l.budget {
		l.size -= len(l.kept[drop]) + 1
		drop++
	}
	if drop > 0 {
		// Copy down rather than reslice, so the dropped values are freed
		// and the slice does not grow without bound.
		l.kept = append(l.kept[:0], l.kept[drop:]...)
	}
}

func (l *latestFitting) sagas() ([]json.RawMessage, error) {
	if l.tooLarge != "" {
		return nil, fmt.Errorf("saga %s is %d bytes, over the server's payload limit of %d: %w", l.tooLarge, l.tooSize, l.budget+512, errTooLargeToAnswer)
	}
	return l.kept, nil
}
