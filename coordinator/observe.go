package coordinator

import (
	"errors"
	"fmt"
	"time"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Observer is told what the coordinator does, for metrics. The coordinator
// calls it from one goroutine at a time (its loop, or Run before the loop
// starts); its methods must return quickly and must not call the
// coordinator.
type Observer interface {
	// Committed is called once a batch is stored and its commands
	// published, with the batch's commands and events in order, and the
	// engine's summary after the batch; and with no commands, no events
	// and the summary of an engine holding no saga when the coordinator
	// holds none: at New, and when a term ends.
	Committed(cmds []messages.Command, events []messages.Event, sum messages.Summary)
	// Answered is called when an answer settles cmd with outcome other
	// than working: ticks is the simulation time since cmd was sent, took
	// the wall-clock time since this coordinator published it, negative
	// when it did not (a command sent by a predecessor).
	Answered(cmd messages.Command, outcome messages.Outcome, ticks int64, took time.Duration)
}

// MessageObserver, when an [Observer] implements it too, is told of each
// command message published: how many commands it holds (wire.go).
type MessageObserver interface {
	Sent(commands int)
}

// RecordObserver, when an [Observer] implements it too, is told of each
// message of a role's record log the coordinator reads: how many records
// it holds (records.go).
type RecordObserver interface {
	RecordsRead(role string, records int)
}

// RetryObserver, when an [Observer] implements it too, is told of each
// failed saga of type sagaType (its subject) an operator's retry sent back
// to compensating, once that is stored: the saga will end again.
type RetryObserver interface {
	Retried(sagaType string)
}

// AbortObserver, when an [Observer] implements it too, is told of each
// active saga of type sagaType (its subject) an operator's abort rolled
// back, once that is stored.
type AbortObserver interface {
	Aborted(sagaType string)
}

// DefinitionObserver, when an [Observer] implements it too, is told of
// each definition the coordinator's engine gains after it was created
// with [Options.Definitions]: a version registered at run time, once it
// is stored, and each stored version a new term recovers from the bucket.
// The observer can then show its saga type's series from the start, as
// it does for the types given at start.
type DefinitionObserver interface {
	Defined(d saga.Definition)
}

// BytesObserver, when an [Observer] implements it too, is told with
// each call of Committed the bytes the sagas in flight hold, as
// saga.Engine.ActiveBytes counts them: what Options.MaxActiveBytes
// bounds.
type BytesObserver interface {
	HeldBytes(bytes int64)
}

// observeBytes tells the observer, if it listens, the bytes the sagas in
// flight hold.
func (c *Coordinator) observeBytes() {
	if o, ok := c.opts.Observer.(BytesObserver); ok {
		o.HeldBytes(c.engine.ActiveBytes())
	}
}

// defined tells the observer, if it listens, of d.
func (c *Coordinator) defined(d saga.Definition) {
	if o, ok := c.opts.Observer.(DefinitionObserver); ok {
		o.Defined(d)
	}
}

// applyAnswer applies r to the engine as ApplyReply does, and tells the
// observer, if any, which command it settled, and ends its span.
func (c *Coordinator) applyAnswer(r messages.Reply, now time.Time, out *saga.Outbox) error {
	if c.opts.Observer == nil && !c.tracing() {
		return c.engine.ApplyReply(r, now, out)
	}
	cmd, had := c.engine.Command(r.SagaID)
	err := c.engine.ApplyReply(r, now, out)
	if err != nil || !had {
		return err
	}
	c.traceAnswer(r.SagaID, r.Outcome, r.Reason)
	if c.opts.Observer == nil || r.Outcome == messages.Working {
		return nil
	}
	took := time.Duration(-1)
	if at, ok := c.sentAt[r.SagaID]; ok {
		took = now.Sub(at)
	}
	c.opts.Observer.Answered(cmd, r.Outcome, c.engine.Tick()-cmd.Tick, took)
	return nil
}

// observeCommit tells the observer, if any, what the committed batch out
// did, and notes when each of its commands went out.
func (c *Coordinator) observeCommit(out *saga.Outbox, now time.Time) {
	if c.opts.Observer == nil {
		return
	}
	for i := range out.Commands {
		c.sentAt[out.Commands[i].SagaID] = now
	}
	for i := range out.Events {
		if saga.Status(out.Events[i].Status).Terminal() {
			delete(c.sentAt, out.Events[i].SagaID)
		}
	}
	c.opts.Observer.Committed(out.Commands, out.Events, c.engine.Summary())
	c.observeBytes()
}

// Where [Coordinator.Run] is.
const (
	runStarting = iota
	runStandby
	runActive
	runStopped
)

// ErrNotReady is wrapped by [Coordinator.Health] while the coordinator is
// not ready.
var ErrNotReady = errors.New("coordinator not ready")

// Health returns nil while Run has set up natsaga's streams and bucket and
// either holds the lease or stands by for it, and an error wrapping
// [ErrNotReady] that says what it does otherwise. It is safe for
// concurrent use.
func (c *Coordinator) Health() error {
	switch c.state.Load() {
	case runStandby, runActive:
		return nil
	case runStopped:
		return fmt.Errorf("%w: stopped", ErrNotReady)
	}
	return c.ended.Load().notReady()
}

// endedTerms is why Run's terms ended since it was last ready: the last
// term that was ready (cause), and the last set-up that failed after it
// (setup). A set-up that fails while the server is away says only that it
// cannot reach it; what ended the term is what an operator asks.
type endedTerms struct{ cause, setup error }

// next returns e with err, the error a term ended with, once it was
// ready (set up, standing by or serving), or in its set-up.
func (e *endedTerms) next(err error, ready bool) *endedTerms {
	if ready {
		return &endedTerms{cause: err}
	}
	var cause error
	if e != nil {
		cause = e.cause
	}
	return &endedTerms{cause: cause, setup: err}
}

// notReady is Health's error while a term sets up.
func (e *endedTerms) notReady() error {
	switch {
	case e == nil:
		return fmt.Errorf("%w: setting up streams and bucket", ErrNotReady)
	case e.cause == nil:
		return fmt.Errorf("%w: setting up streams and bucket: the last attempt failed: %w", ErrNotReady, e.setup)
	case e.setup == nil:
		return fmt.Errorf("%w: setting up streams and bucket again, after a term that ended: %w", ErrNotReady, e.cause)
	}
	return fmt.Errorf("%w: setting up streams and bucket again, after a term that ended: %w; the last set-up failed: %w",
		ErrNotReady, e.cause, e.setup)
}

// Active reports whether the coordinator holds the lease and serves.
func (c *Coordinator) Active() bool { return c.state.Load() == runActive }
