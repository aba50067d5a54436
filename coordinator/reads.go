package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/messages"
)

// MaxBucketReads bounds the reads of the bucket that answer requests at
// once: a status or a retry of a saga no longer in memory, a start with a
// client-chosen id, and a list of finished sagas (of which at most four
// run at once). A request that needs one beyond it is answered at once
// with the error code "busy" and may be sent again after a backoff. A
// batch of starts costs one read for all its ids, and the flood driver
// sends at most four batches at once, far below it.
const MaxBucketReads = 256

// bucketWait bounds one read of a saga from the bucket.
const bucketWait = 5 * time.Second

// errTermEnded answers a request whose read of the bucket the end of the
// coordinator's term cut short, or came too late to start one: the next
// term, or a standby taking over, serves it.
var errTermEnded = fmt.Errorf("the coordinator's term ended; ask again: %w", messages.ErrBusy)

// errReadsBusy answers a request that needs a read of the bucket while
// MaxBucketReads run.
var errReadsBusy = fmt.Errorf("%d reads of the bucket at once, the limit; ask again: %w", MaxBucketReads, messages.ErrBusy)

// bucketReads runs the reads of the bucket that answer requests, each on a
// goroutine of its own, so that requests are not served one read at a time
// and the engine's loop never waits for one. It is the reads' owner: it
// starts at most MaxBucketReads at once, and a term waits for those it
// started before it ends, so that none reads the bucket or answers a
// request for a term that is over. It is safe for concurrent use.
type bucketReads struct {
	mu      sync.Mutex
	running int
	wg      sync.WaitGroup
	// hook, when set (by tests, before Run), is called in each read before
	// it reads, with the read's context.
	hook func(context.Context)
}

// start runs read on a goroutine of its own with a context that ends after
// wait, or when ctx, the term's, ends. It returns an error wrapping
// messages.ErrBusy, and starts nothing, when MaxBucketReads run or when
// ctx has ended.
func (r *bucketReads) start(ctx context.Context, wait time.Duration, read func(ctx context.Context)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Checked under the lock that wait takes: once the term has ended
	// ctx and waits, no read starts for it.
	if ctx.Err() != nil {
		return errTermEnded
	}
	if r.running >= MaxBucketReads {
		return errReadsBusy
	}
	r.running++
	r.wg.Go(func() {
		defer func() {
			r.mu.Lock()
			r.running--
			r.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if r.hook != nil {
			r.hook(ctx)
		}
		read(ctx)
	})
	return nil
}

// wait waits until every read started has returned. The caller has ended
// the context the reads were started with, which cuts them short and
// refuses any other.
func (r *bucketReads) wait() {
	// A start that holds the lock now has counted its read once wait has
	// the lock; any later one sees the ended context. So no read is
	// counted while wg.Wait is waiting at zero.
	r.mu.Lock()
	r.mu.Unlock()
	r.wg.Wait()
}

// readError is [readError] for c's term.
func (c *Coordinator) readError(ctx context.Context, err error) error {
	return readError(ctx, err, c.nc.LastError(), c.held.runOut())
}

// readError is the error a request is answered with when its read of the
// bucket with ctx failed with err: the end of the term, not the read's own
// deadline, is what cancels ctx.
//
// last is the connection's last asynchronous error: a request the server
// refuses for the coordinator's permissions is not answered, and times
// out; such a refusal is named then, for it is the likelier cause.
//
// over is set when the term's lease has run out by this process's clock: a
// process stopped (SIGSTOP, a machine paused) longer than the lease finds
// its reads past their deadline when it wakes, and its term over.
func readError(ctx context.Context, err, last error, over bool) error {
	switch {
	case errors.Is(ctx.Err(), context.Canceled), errors.Is(ctx.Err(), context.DeadlineExceeded) && over:
		return errTermEnded
	case errors.Is(ctx.Err(), context.DeadlineExceeded) && errors.Is(last, nats.ErrPermissionViolation):
		return fmt.Errorf("the read of the bucket was not answered in the time the coordinator allows one; "+
			"the server last refused the coordinator %q: check its permissions: %w", last.Error(), err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("the read of the bucket took longer than the coordinator allows one: %w", err)
	}
	return err
}
