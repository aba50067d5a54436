// Package streams creates natsaga's streams and its bucket, and leaves
// one that is already as asked alone; it reads a stream to its end, and
// deletes the ordered consumers its readers are done with.
//
// jetstream's CreateOrUpdateStream updates a stream that exists, even to
// the configuration it has. In nats-server v2.15.2 such an update races
// with the creation of a consumer on the same stream (the race detector
// found it in floodsim's TestReproducible, where agent copies opened
// their role's state stream while the coordinator created its consumer of
// the records). Every natsaga process opens the streams it uses when it
// starts, so the common case, a stream already as asked, must not update.
package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Ensure returns the stream cfg names: created when it does not exist,
// updated when it exists with another configuration, and left as it is
// otherwise. When it updates, cut names the limits the stream had that
// keep less than cfg's ([Cut]).
func Ensure(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (s jetstream.Stream, cut []string, err error) {
	s, err = js.CreateStream(ctx, cfg)
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return s, nil, err
	}
	// What it was is read only to say what was cut: a read refused (a
	// user without the stream's info) leaves the update to go on.
	if s, err = js.Stream(ctx, cfg.Name); err == nil {
		cut = Cut(s.CachedInfo().Config, cfg)
	}
	s, err = js.UpdateStream(ctx, cfg)
	return s, cut, err
}

// Cut names the limits of have that keep less than want's, each with
// both values ("max_msgs 5, not unlimited"): natsaga never sets them so,
// and a stream an operator cut this way has lost what they removed.
func Cut(have, want jetstream.StreamConfig) []string {
	var cut []string
	limit := func(name string, h, w int64, show func(int64) string) {
		if h > 0 && (w <= 0 || h < w) {
			cut = append(cut, fmt.Sprintf("%s %s, not %s", name, show(h), show(w)))
		}
	}
	count := func(v int64) string {
		if v <= 0 {
			return "unlimited"
		}
		return strconv.FormatInt(v, 10)
	}
	age := func(v int64) string {
		if v <= 0 {
			return "unlimited"
		}
		return time.Duration(v).String()
	}
	limit("max_msgs", have.MaxMsgs, want.MaxMsgs, count)
	limit("max_bytes", have.MaxBytes, want.MaxBytes, count)
	limit("max_msgs_per_subject", have.MaxMsgsPerSubject, want.MaxMsgsPerSubject, count)
	limit("max_age", int64(have.MaxAge), int64(want.MaxAge), age)
	return cut
}

// EnsureKeyValue is [Ensure] for a key-value bucket.
func EnsureKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return js.UpdateKeyValue(ctx, cfg)
	}
	return kv, err
}

// forgetWait bounds the request that deletes a consumer no longer read:
// the server answers one in milliseconds, and a reader that stops while
// JetStream cannot answer (a cluster electing its leaders) should not
// wait long for a delete that the inactivity threshold does in the end.
const forgetWait = 500 * time.Millisecond

// Forget deletes the ordered consumer cons of stream once its reader has
// stopped. Left alone, the server keeps it for nats.go's inactivity
// threshold, five minutes, after its last pull: a process that opens and
// closes its logs in a loop (a coordinator whose terms keep ending) would
// collect them. It is best effort, as nats.go's own delete when an ordered
// consumer starts again: without a connection it does nothing, and the
// threshold removes the consumer later.
func Forget(js jetstream.JetStream, stream string, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || !js.Conn().IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), forgetWait)
	defer cancel()
	_ = js.DeleteConsumer(ctx, stream, info.Name)
}

// ReadExpiry and ReadHeartbeat are the pulls of an ordered consumer that
// reads a stream (Read, and a log's follower): a pull lost (seen on a
// three-node cluster, where the first pull of a consumer just made can go
// unanswered) shows as two heartbeats missed, and the ordered consumer is
// made anew. nats.go's default for an ordered consumer, a heartbeat of
// 5 s, held a coordinator's takeover in the compose demo for 10 s (its
// saga log read) in 2 of 6 tries, 20 s in some; with these, takeovers
// took 2.9 to 5.1 s in 10 tries.
const (
	ReadExpiry    = 2 * time.Second
	ReadHeartbeat = 500 * time.Millisecond
)

// Read reads the messages of stream that cfg selects, in order, with an
// ordered consumer, and calls each with each message and its metadata
// until each returns false or the message was the last the consumer had
// pending: what was stored when the read got there, not what comes after.
// It returns ctx's error when ctx ends first.
func Read(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.OrderedConsumerConfig, each func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool) error {
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return err
	}
	defer Forget(js, stream, cons)
	// Nothing to read sends nothing that would end the read. The
	// consumer's creation said how many there are; asking again would
	// need a permission on a consumer whose name is made up.
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullExpiry(ReadExpiry), jetstream.PullHeartbeat(ReadHeartbeat))
	if err != nil {
		return err
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		meta, err := m.Metadata()
		if err != nil {
			return err
		}
		if !each(m, meta) || meta.NumPending == 0 {
			return nil
		}
	}
}
