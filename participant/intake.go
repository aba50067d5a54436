package participant

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
)

// intake is how the messages pulled reach an agent's workers.
type intake struct {
	// take hands a message pulled to the workers; done tells them that
	// no more will come.
	take func(jetstream.Msg)
	done func()
	// room waits until the workers' queue has room for another fetch,
	// and reports false when ctx ended first; nil for a serial copy,
	// which does not fetch.
	room func(ctx context.Context) bool
}

// serialIntake starts a serial copy's one worker (on wg), and returns
// how messages reach it. The worker takes in all that has come before it
// runs the lowest, and runs a batch of it. The pull never waits for it: a
// copy that stopped asking for commands while it works through batches
// would lose its pin, and what waited unexpanded in the client would come
// back to the other copy. A message's commands go to the worker together,
// so that it can run them as one batch.
func (a *Agent) serialIntake(inHand context.Context, wg *sync.WaitGroup) intake {
	work := make(chan []jetstream.Msg)
	queued := gather(inHand, work)
	wg.Go(func() { a.serialWork(inHand, queued) })
	take := func(m jetstream.Msg) {
		var cmds []jetstream.Msg
		a.expand(m, func(c jetstream.Msg) { cmds = append(cmds, c) })
		if len(cmds) == 0 {
			return
		}
		select {
		case work <- cmds:
		case <-inHand.Done():
			// Abandoned: left to be delivered again.
		}
	}
	return intake{take: take, done: func() { close(work) }}
}

// sharedIntake starts the Concurrency workers of a role that is not
// serial (on wg), and returns how messages reach them. Their queue holds
// inHandCommands, and room for what one fetch may bring on top: a message
// taken in never waits.
func (a *Agent) sharedIntake(inHand context.Context, wg *sync.WaitGroup) intake {
	work := make(chan jetstream.Msg, inHandCommands+fetchMessages*messages.MaxBatch)
	taken := make(chan struct{}, 1)
	for range a.opts.Concurrency {
		wg.Go(func() {
			for m := range work {
				select {
				case taken <- struct{}{}:
				default:
				}
				a.traced(inHand, m)
			}
		})
	}
	room := func(ctx context.Context) bool {
		for len(work) >= inHandCommands {
			select {
			case <-taken:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	take := func(m jetstream.Msg) {
		a.expand(m, func(c jetstream.Msg) {
			select {
			case work <- c:
			case <-inHand.Done():
				// Abandoned: left to be delivered again.
			}
		})
	}
	return intake{take: take, done: func() { close(work) }, room: room}
}

// A role that is not serial takes in only what its workers will soon run,
// so that its copies share the work, and it keeps everything it has taken
// in (keepInHand) until it is settled, so that nothing it holds is
// delivered again meanwhile. A pull that keeps a buffer of messages ahead
// of the agent (jetstream's Messages) cannot do both: what waits in its
// buffer while the workers are busy is not yet the agent's to keep, and
// comes back after the ack wait. So the agent fetches: it asks for a few
// messages only when its queue has room, and takes in each one the
// moment it arrives.

// fetchMessages is how many messages one fetch asks for.
const fetchMessages = 16

// fetchExpiry bounds one fetch, and fetchHeartbeat is the server's
// heartbeat during it: a lost server is noticed within seconds.
const (
	fetchExpiry    = 4 * time.Second
	fetchHeartbeat = time.Second
)

// fetcher is a [jetstream.MessagesContext] over a consumer that fetches
// fetchMessages at a time, each fetch once room reports true.
type fetcher struct {
	cons jetstream.Consumer
	// room blocks until the agent has room for another fetch's worth of
	// commands, or ctx ends; it reports whether there is room.
	room func(ctx context.Context) bool

	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	batch jetstream.MessageBatch
	// draining: no fetch is started any more; stopped: what the fetch in
	// progress brought is dropped too.
	draining, stopped bool
}

func newFetcher(cons jetstream.Consumer, room func(context.Context) bool) *fetcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &fetcher{cons: cons, room: room, ctx: ctx, cancel: cancel}
}

// Next returns the next message of the current fetch, starting one when
// there is none and the agent has room. It returns
// [jetstream.ErrMsgIteratorClosed] once stopped, or drained and empty, and
// the error of a fetch that failed (a missed heartbeat among them).
func (f *fetcher) Next(...jetstream.NextOpt) (jetstream.Msg, error) {
	for {
		f.mu.Lock()
		batch, draining := f.batch, f.draining
		f.mu.Unlock()
		if batch != nil {
			m, ok := <-batch.Messages()
			f.mu.Lock()
			stopped := f.stopped
			f.mu.Unlock()
			if stopped {
				return nil, jetstream.ErrMsgIteratorClosed
			}
			if ok {
				return m, nil
			}
			f.mu.Lock()
			f.batch = nil
			f.mu.Unlock()
			if err := batch.Error(); err != nil && f.ctx.Err() == nil {
				return nil, err
			}
			continue
		}
		if draining || f.ctx.Err() != nil || !f.room(f.ctx) {
			return nil, jetstream.ErrMsgIteratorClosed
		}
		fetchCtx, cancel := context.WithTimeout(f.ctx, fetchExpiry)
		batch, err := f.cons.Fetch(fetchMessages, jetstream.FetchContext(fetchCtx), jetstream.FetchHeartbeat(fetchHeartbeat))
		if err != nil {
			cancel()
			if f.ctx.Err() != nil {
				return nil, jetstream.ErrMsgIteratorClosed
			}
			return nil, err
		}
		f.mu.Lock()
		f.batch = &fetched{MessageBatch: batch, cancel: cancel}
		f.mu.Unlock()
	}
}

// Stop ends the fetch in progress; what it brought and Next did not
// return is left to be delivered again.
func (f *fetcher) Stop() {
	f.mu.Lock()
	f.draining, f.stopped = true, true
	f.mu.Unlock()
	f.cancel()
}

// Drain ends the fetch in progress; Next returns what it brought, then
// [jetstream.ErrMsgIteratorClosed].
func (f *fetcher) Drain() {
	f.mu.Lock()
	f.draining = true
	f.mu.Unlock()
	f.cancel()
}

// fetched is a fetch and the cancellation of its context, released once
// its messages are read.
type fetched struct {
	jetstream.MessageBatch
	cancel context.CancelFunc
}

func (b *fetched) Error() error {
	b.cancel()
	err := b.MessageBatch.Error()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return nil // the fetch's own expiry, or Stop
	}
	return err
}
