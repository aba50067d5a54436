package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/streams"
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
