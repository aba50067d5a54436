package saga

import (
	"fmt"
	"slices"
	"time"

	"github.com/natsaga/natsaga/messages"
)

// ID identifies one saga execution. The engine makes UUIDs; a client may
// choose its own to make starts idempotent.
type ID = string

// Status is where a saga is in its life.
type Status string

// The statuses. Pending, InProgress and Compensating are active; the others
// are terminal.
const (
	Pending      Status = "pending"
	InProgress   Status = "in_progress"
	Compensating Status = "compensating"
	Completed    Status = "completed"
	RolledBack   Status = "rolled_back"
	TimedOut     Status = "timed_out"
	Failed       Status = "failed"
)

// Terminal reports whether s is a final status.
func (s Status) Terminal() bool {
	return s == Completed || s == RolledBack || s == TimedOut || s == Failed
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case Pending, InProgress, Compensating, Completed, RolledBack, TimedOut, Failed:
		return true
	}
	return false
}

// Execution is one running or finished saga: its state, as the engine keeps
// it and as the coordinator stores it (JSON).
type Execution struct {
	ID         ID     `json:"saga_id"`
	Definition string `json:"definition"`
	// Version is the version of the definition the saga runs by: the
	// latest when it started, to its end.
	Version int64 `json:"version,omitempty"`
	// Saga is the definition's subject token.
	Saga   string `json:"saga"`
	Status Status `json:"status"`
	// Cause is the status a compensating saga ends with: RolledBack after
	// a business failure or an abort, TimedOut after a timeout.
	Cause   Status           `json:"cause,omitempty"`
	Context messages.Context `json:"context"`
	// Current is the index of the step whose command is outstanding: the
	// step executing, or the step compensating. -1 when none.
	Current int             `json:"current_step"`
	Action  messages.Action `json:"action,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	// Seq numbers the commands sent for this saga, from 1.
	Seq int `json:"seq"`
	// Rank is the place the driver gave the saga when it started it; 0 for
	// a saga started outside a simulation run. A ranked saga's commands
	// are released in rounds, in rank order (see [Engine]).
	Rank int64 `json:"rank,omitempty"`
	// Round is the round in which a ranked saga's outstanding command is
	// released: one more than the round of the command whose answer led to
	// it, or the first round of the tick that started it, timed it out or
	// made its working command due.
	Round int64 `json:"round,omitempty"`
	// StartedTick is the tick the saga started at; for a pending saga
	// whose start was scheduled, the tick it will start at.
	StartedTick int64 `json:"started_tick"`
	// DispatchedTick is the tick the outstanding command was sent at (a
	// retry keeps it): its step's timeout counts from here.
	DispatchedTick int64 `json:"dispatched_tick"`
	// Awaiting is true while the outstanding command has had no answer.
	Awaiting bool `json:"awaiting,omitempty"`
	// Working is true while the outstanding command was answered
	// "working", and Until is the tick at which its agent said it would
	// answer (0: it did not say).
	Working bool  `json:"working,omitempty"`
	Until   int64 `json:"until,omitempty"`
	// RetryAt is set while the saga waits to resend its command.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Completed names the steps whose execute succeeded, in order, and
	// Compensated those undone since, in the order undone.
	Completed   []string `json:"completed_steps"`
	Compensated []string `json:"compensated_steps,omitempty"`
	// Results holds each completed step's output, by step name.
	Results map[string]messages.Context `json:"step_results,omitempty"`
	// Error is why the saga rolled back, timed out or failed.
	Error string `json:"error,omitempty"`
	// History holds the transitions kept, oldest first (HistoryDropped
	// counts those dropped).
	History []Transition `json:"history"`
	// HistoryDropped counts the transitions dropped from History to hold
	// it to its bound ([MaxHistory]).
	HistoryDropped int `json:"history_dropped,omitempty"`

	def *Definition
	// gen invalidates deadlines set before the last new deadline.
	gen int
	// held is set while the saga waits in the engine for its round to be
	// released; publish says whether its command goes out then (a due
	// working command only joins the round). open is set while the saga
	// counts towards the released round, and due while it is counted as a
	// working command whose tick has come.
	held, publish, open, due bool
	// earlyGen is gen when the final answer to the outstanding working
	// command came before its declared tick and was held back (to be
	// offered again): an answer in hand, so a tick that moves the clock
	// past the command's deadlines at once does not time it out (see
	// [Engine.AdvanceTick]). Held in memory only.
	earlyGen int
	// resultsLen is the encoded size of Results when resultsKnown: taken
	// once (a saga restored from the store), then kept as results are
	// added (setResult).
	resultsLen   int
	resultsKnown bool
	// historyLen is the encoded size of History, as transitionSize
	// counts it, when historyKnown: taken once, then kept as transitions
	// are recorded and dropped.
	historyLen   int
	historyKnown bool
	// counted is set while the saga is active and what it holds is
	// counted in [Engine.ActiveBytes]; charged is what is counted.
	counted bool
	charged int
}

// resultsSize returns the bytes of x's step results, as EncodedLen counts
// them.
func (x *Execution) resultsSize() int {
	if !x.resultsKnown {
		x.resultsLen = 0
		for _, r := range x.Results {
			x.resultsLen += r.EncodedLen()
		}
		x.resultsKnown = true
	}
	return x.resultsLen
}

// setResult keeps output, whose EncodedLen is size (-1: not taken), as the
// result of step.
func (x *Execution) setResult(step string, output messages.Context, size int) {
	if x.Results == nil {
		x.Results = make(map[string]messages.Context, len(x.def.Steps))
	}
	if x.resultsKnown {
		if old, ok := x.Results[step]; ok {
			x.resultsLen -= old.EncodedLen()
		}
		if size < 0 {
			size = output.EncodedLen()
		}
		x.resultsLen += size
	}
	x.Results[step] = output
}

// MaxHistory bounds a saga's history, in transitions. Its bytes are held,
// too, to the engine's context bound (Options.MaxContext, or
// [messages.MaxContext] when that is not set), so that a saga's state, its
// context and step results within twice that bound, fits the one message
// it is stored in, however often its steps are retried (a retry with its
// agent's reason is a transition) or an operator retries it. Beyond
// either, the engine drops the oldest transition but the first, the one
// that says why the saga rolled back and the last, and counts it in
// [Execution.HistoryDropped].
const MaxHistory = 1024

// transitionSize is at least the bytes t takes in a stored saga: the keys
// and two integers of up to 20 characters, and its strings as JSON
// writes them.
func transitionSize(t *Transition) int {
	const fixed = len(`{"tick":,"status":,"step":,"action":,"attempt":,"note":}`) + 2*20
	return fixed + messages.QuotedLen(string(t.Status)) + messages.QuotedLen(t.Step) +
		messages.QuotedLen(string(t.Action)) + messages.QuotedLen(t.Note)
}

// historySize returns the bytes of x's history, as transitionSize counts
// them.
func (x *Execution) historySize() int {
	if !x.historyKnown {
		x.historyLen = 0
		for i := range x.History {
			x.historyLen += transitionSize(&x.History[i])
		}
		x.historyKnown = true
	}
	return x.historyLen
}

// Transition is one entry of a saga's history.
type Transition struct {
	Tick    int64           `json:"tick"`
	Status  Status          `json:"status"`
	Step    string          `json:"step,omitempty"`
	Action  messages.Action `json:"action,omitempty"`
	Attempt int             `json:"attempt,omitempty"`
	Note    string          `json:"note,omitempty"`
}

// Clone returns a deep copy of x that shares no mutable state with it.
func (x *Execution) Clone() Execution {
	c := *x
	c.held, c.publish, c.open, c.due = false, false, false, false
	c.counted, c.charged = false, 0
	c.Context = x.Context.Clone()
	// slices.Clone keeps an empty list empty rather than nil, so that a
	// saga with no step done shows "completed_steps":[] in a status answer
	// as it does in the bucket, not null.
	c.Completed = slices.Clone(x.Completed)
	c.Compensated = append([]string(nil), x.Compensated...)
	c.History = append([]Transition(nil), x.History...)
	if x.Results != nil {
		c.Results = make(map[string]messages.Context, len(x.Results))
		for k, v := range x.Results {
			c.Results[k] = v.Clone()
		}
	}
	return c
}

// Command returns the command x has outstanding, and false when it has none
// (it is terminal or between retries).
func (x *Execution) Command() (messages.Command, bool) {
	if x.Status.Terminal() || x.Current < 0 || x.def == nil || !x.RetryAt.IsZero() {
		return messages.Command{}, false
	}
	return x.command(), true
}

func (x *Execution) command() messages.Command {
	return messages.Command{
		V:       messages.Version,
		SagaID:  x.ID,
		Saga:    x.Saga,
		Step:    x.def.Steps[x.Current].Name,
		Action:  x.Action,
		Attempt: x.Attempt,
		Seq:     x.Seq,
		Tick:    x.DispatchedTick,
		Rank:    x.Rank,
		Context: x.Context,
	}
}

func (x *Execution) step() *Step { return &x.def.Steps[x.Current] }

// holdsTogether returns an error naming what does not hold in x, read
// from the store, against d, its definition: its status, its outstanding
// step and action as its status needs them (an active saga's command is
// of one of d's steps: one outside them stopped the engine as it sent
// it), its counters and the steps it names. Any
// stored saga this engine wrote holds together; one that does not was
// written by someone else.
func (x *Execution) holdsTogether(d *Definition) error {
	if !x.Status.Valid() {
		return fmt.Errorf("status %q", x.Status)
	}
	if x.Current < -1 || x.Current >= len(d.Steps) {
		return fmt.Errorf("status %s, step %d of %d", x.Status, x.Current, len(d.Steps))
	}
	switch x.Status {
	case InProgress, Compensating:
		want := messages.Execute
		if x.Status == Compensating {
			want = messages.Compensate
		}
		if x.Current < 0 || x.Action != want {
			return fmt.Errorf("status %s, step %d, action %q: an active saga's outstanding command is the %s of one of its steps", x.Status, x.Current, x.Action, want)
		}
	case Failed:
		if x.Current >= 0 && x.Action != messages.Compensate {
			return fmt.Errorf("status failed, step %d, action %q: a failed saga's outstanding command is a compensation", x.Current, x.Action)
		}
	}
	if x.Cause != "" && x.Cause != RolledBack && x.Cause != TimedOut {
		return fmt.Errorf("cause %q", x.Cause)
	}
	if x.Attempt < 0 || x.Seq < 0 || x.Rank < 0 || x.Round < 0 || x.HistoryDropped < 0 {
		return fmt.Errorf("attempt %d, seq %d, rank %d, round %d, history dropped %d: none is negative", x.Attempt, x.Seq, x.Rank, x.Round, x.HistoryDropped)
	}
	for _, names := range [][]string{x.Completed, x.Compensated} {
		for _, n := range names {
			if !slices.ContainsFunc(d.Steps, func(s Step) bool { return s.Name == n }) {
				return fmt.Errorf("step %q: not a step of %s version %d", messages.Clip(n), d.Name, d.Version)
			}
		}
	}
	return nil
}

// rollbackReason returns why x started compensating: the note of the first
// change of status to Compensating in its history ("" when there is none).
func (x *Execution) rollbackReason() string {
	for _, t := range x.History {
		if t.Status == Compensating && t.Step == "" {
			return t.Note
		}
	}
	return ""
}

// Outbox collects what the engine's inputs produce. The caller owns it and
// resets it (with Reset) between batches.
type Outbox struct {
	// Commands to publish, in order.
	Commands []messages.Command
	// Events to publish, in order.
	Events []messages.Event
	// Changed lists the sagas whose state changed, in the order they
	// changed; a saga may appear more than once. A durable runtime stores
	// them before it publishes their Commands. The pointers are the engine's own:
	// read them before the next call into the engine.
	Changed []*Execution
	// Expired lists the sagas a tick timed out.
	Expired []ID
}

// Reset empties o, keeping its capacity.
func (o *Outbox) Reset() {
	o.Commands = o.Commands[:0]
	o.Events = o.Events[:0]
	o.Changed = o.Changed[:0]
	o.Expired = o.Expired[:0]
}

// LastStep returns the step named by the last transition of x that names
// one: while x awaits an answer, the step of its outstanding command. It
// returns "" when no transition names a step.
func (x *Execution) LastStep() string {
	for i := len(x.History) - 1; i >= 0; i-- {
		if x.History[i].Step != "" {
			return x.History[i].Step
		}
	}
	return ""
}
