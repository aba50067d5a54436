// Package pull keeps a JetStream pull consumer flowing through what a
// cluster does to it: missed heartbeats, a lost node, a consumer deleted or
// moved. The coordinator and the agents read their streams through it.
package pull

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Open returns a fresh iterator over a consumer, creating or binding the
// consumer as needed.
type Open func(ctx context.Context) (jetstream.MessagesContext, error)

// Options tunes Loop. The zero value works.
type Options struct {
	// Pause is the wait before reopening after an iterator ended. 0 means
	// one second.
	Pause time.Duration
	// Closed, when set, reports whether the connection is closed for good
	// (nats.Conn.IsClosed).
	Closed func() bool
	// Connected, when set, reports whether the connection is up
	// (nats.Conn.IsConnected). A drain needs the server: without it, the
	// iterator is stopped at ctx's end instead.
	Connected func() bool
	// Health, when set, is told how the consumer stands: nil each time an
	// iterator opens, and the error each time an open fails or an
	// iterator ends other than by ctx, so that until the next open
	// succeeds the last call names what is wrong.
	Health func(error)
}

// maxMissed is how many heartbeats in a row an iterator may miss, with no
// message between, before it is taken as ended and opened again: the
// server may have lost the consumer (a restart with its store gone)
// while nats.go's iterator pulls on for ever.
const maxMissed = 3

// Loop hands every message of the iterators open returns to handle, until
// ctx ends; then it drains the current iterator (handle still gets what it
// held) and returns nil, or stops it at once when hard ends first, hard is
// ctx, or the connection is down (opts.Connected). A drain that has begun
// runs to its end: nats.go's iterator takes no stop after a drain, and
// its subscription's drain waits for the server until the connection's
// drain timeout. A missed
// heartbeat is logged (to log; nil discards) and pulling goes on, up to
// [maxMissed] in a row, which end the iterator; an
// iterator that ends is replaced by a new one after a
// pause, and so is a failed open, except when the connection is closed
// (its reconnects ran out): Loop then returns [nats.ErrConnectionClosed],
// since nothing it opens again could pull. handle is called from one
// goroutine.
func Loop(ctx, hard context.Context, log *slog.Logger, opts Options, open Open, handle func(jetstream.Msg)) error {
	if opts.Pause == 0 {
		opts.Pause = time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	health := opts.Health
	if health == nil {
		health = func(error) {}
	}
	for {
		it, err := open(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if closed(opts, err) {
				return nats.ErrConnectionClosed
			}
			health(fmt.Errorf("the consumer cannot be opened: %w", err))
			log.Warn("pull consumer unavailable; retrying", "err", err)
			if !pause(ctx, opts.Pause) {
				return nil
			}
			continue
		}
		stopDrain := context.AfterFunc(ctx, func() {
			if hard.Err() != nil || (opts.Connected != nil && !opts.Connected()) {
				it.Stop()
				return
			}
			it.Drain()
		})
		stopHard := context.AfterFunc(hard, it.Stop)
		health(nil)
		err = each(it, log, handle)
		stopDrain()
		stopHard()
		it.Stop()
		if ctx.Err() != nil {
			return nil
		}
		if closed(opts, err) {
			return nats.ErrConnectionClosed
		}
		health(fmt.Errorf("the consumer's pull ended: %w", err))
		log.Warn("pull consumer ended; opening it again", "err", err)
		if !pause(ctx, opts.Pause) {
			return nil
		}
	}
}

// each hands it's messages to handle until it ends, or misses maxMissed
// heartbeats in a row, and returns why.
func each(it jetstream.MessagesContext, log *slog.Logger, handle func(jetstream.Msg)) error {
	missed := 0
	for {
		m, err := it.Next()
		switch {
		case err == nil:
			missed = 0
			handle(m)
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			if missed++; missed == maxMissed {
				return fmt.Errorf("%d heartbeats missed in a row: %w", missed, err)
			}
			log.Warn("pull consumer missed heartbeats; pulling on", "err", err)
		default:
			return err
		}
	}
}

// closed reports whether err, or opts.Closed, says the connection is
// closed.
func closed(opts Options, err error) bool {
	return errors.Is(err, nats.ErrConnectionClosed) || (opts.Closed != nil && opts.Closed())
}

func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
