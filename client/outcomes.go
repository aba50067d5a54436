package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Stored returns every saga stored in the saga bucket, read-only: the
// finished ones the coordinator still keeps, and the active ones as last
// stored. With ranked, only the sagas a simulation driver ranked.
func (c *Client) Stored(ctx context.Context, ranked bool) ([]saga.Execution, error) {
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, messages.SagaBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", messages.SagaBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", messages.SagaBucket, err)
	}
	defer func() { _ = w.Stop() }()
	var xs []saga.Execution
	for e := range w.Updates() {
		if e == nil {
			break // every stored value seen
		}
		if !strings.HasPrefix(e.Key(), messages.SagaKeyPrefix) {
			continue
		}
		var x saga.Execution
		if err := json.Unmarshal(e.Value(), &x); err != nil {
			return nil, fmt.Errorf("saga %s: %w", e.Key(), err)
		}
		if !ranked || x.Rank > 0 {
			xs = append(xs, x)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading the sagas: %w", err)
	}
	return xs, nil
}

// WriteOutcomes writes the outcome log of the stored sagas (see
// [Client.Stored] and saga.OutcomeLog: one JSON line per saga, sorted by
// id) to w, and returns the log's SHA-256 in hex and how many sagas it
// holds.
func (c *Client) WriteOutcomes(ctx context.Context, w io.Writer, ranked bool) (digest string, n int, err error) {
	xs, err := c.Stored(ctx, ranked)
	if err != nil {
		return "", 0, err
	}
	log, digest, err := saga.OutcomeLog(xs)
	if err != nil {
		return "", 0, err
	}
	if _, err := w.Write(log); err != nil {
		return "", 0, fmt.Errorf("outcome log: %w", err)
	}
	return digest, len(xs), nil
}

// Watch configures [Client.Watch].
type Watch struct {
	// Saga and Status filter the events; empty means any.
	Saga, Status string
	// All starts from the oldest event kept rather than from now.
	All bool
}

// Watch returns the saga events of the event stream that match f, as they
// come, until ctx ends (the sequence then ends with no error) or the
// stream fails (the sequence ends with the error). It returns an error
// when f names a saga or status that is not a token, or the consumer
// cannot be made.
func (c *Client) Watch(ctx context.Context, f Watch) (iter.Seq2[messages.Event, error], error) {
	sagaTok, statusTok := "*", "*"
	for what, v := range map[string]*string{"saga": &f.Saga, "status": &f.Status} {
		if *v == "" {
			continue
		}
		if err := messages.CheckToken(what, *v); err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
	}
	if f.Saga != "" {
		sagaTok = f.Saga
	}
	if f.Status != "" {
		statusTok = f.Status
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, err
	}
	policy := jetstream.DeliverNewPolicy
	if f.All {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := js.OrderedConsumer(ctx, messages.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{messages.EventSubject(sagaTok, statusTok)},
		DeliverPolicy:  policy,
	})
	if err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	return func(yield func(messages.Event, error) bool) {
		it, err := cons.Messages()
		if err != nil {
			yield(messages.Event{}, fmt.Errorf("watch: %w", err))
			return
		}
		defer it.Stop()
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		for {
			m, err := it.Next()
			if err != nil {
				if ctx.Err() == nil {
					yield(messages.Event{}, fmt.Errorf("watch: %w", err))
				}
				return
			}
			var ev messages.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				c.log.Warn("bad event", "subject", m.Subject(), "err", err)
				continue
			}
			if !yield(ev, nil) {
				return
			}
		}
	}, nil
}
