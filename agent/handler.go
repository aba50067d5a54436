package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/natsaga/natsaga/messages"
)

// ErrTooManyWrites is the reason a store gives, in an Error reply, to an
// action that writes more than one state value: a store commits one value
// with a branch record. Nothing is recorded, and the command fails like a
// transient error.
var ErrTooManyWrites = errors.New("an action may write one state value")

// Tx is a handler's view of its role's state during one command. Values are
// JSON-encoded. Writes take effect only when the command's result is
// recorded, and together with it. An action (an execute, or a
// compensation) may read many values but write at most one
// ([ErrTooManyWrites]).
type Tx interface {
	// Get decodes the state value key into v. It reports false, leaving v
	// untouched, when key has no value yet. A handler that reads several
	// keys must read them in one fixed order. A key is one to eight
	// identifiers joined by dots ([messages.ValidKey]); another is an
	// error wrapping [messages.ErrBadRequest].
	Get(key string, v any) (bool, error)
	// Put sets the state value key to v when the command commits. key must
	// have been read with Get in the same transaction.
	Put(key string, v any) error
}

// CheckValue returns an error wrapping [messages.ErrTooLarge] when value,
// the JSON of key's state value, is larger than a server whose payload
// limit is maxPayload can store with its envelope
// ([messages.MaxValueFor]). A store's Put returns it: the handler's error,
// so the command fails like a transient error.
func CheckValue(key string, value []byte, maxPayload int64) error {
	if limit := messages.MaxValueFor(maxPayload); len(value) > limit {
		return fmt.Errorf("put %s: a value of %d bytes as JSON, more than %d (half the server's payload limit): %w",
			key, len(value), limit, messages.ErrTooLarge)
	}
	return nil
}

// Seeder stores a role's initial state.
type Seeder interface {
	// Init stores v under key unless key already has a value, and reports
	// whether it stored it.
	Init(ctx context.Context, key string, v any) (bool, error)
}

// Handler runs one step's action. Execute returns the step's output, merged
// into the saga context; Compensate undoes the step. Both must have no
// effect except through tx, may run more than once for one command, must
// read the same keys each time they run for one command, and return
// [Reject] for a business rejection. Both must return once ctx ends: an
// agent stopping cancels it one ack wait after it stops pulling, and
// stops without a handler still running one ack wait after that (its
// command is delivered again). A handler that returns an error once its
// context has so ended is not answered: its command goes to another copy
// as it is, and no attempt is spent. An agent says a call that has run
// for 30 s, at warn.
type Handler struct {
	Execute    func(ctx context.Context, tx Tx, cmd *messages.Command) (messages.Context, error)
	Compensate func(ctx context.Context, tx Tx, cmd *messages.Command) error
}

// Validate returns an error wrapping [messages.ErrBadRequest] when h lacks
// an action: every step has a compensation, even one that finds nothing to
// undo.
func (h Handler) Validate() error {
	if h.Execute == nil || h.Compensate == nil {
		return fmt.Errorf("handler needs Execute and Compensate: %w", messages.ErrBadRequest)
	}
	return nil
}

// Step binds a [Handler] to one step of one kind of saga.
type Step struct {
	// Saga and Name are the subject tokens of the step, as in
	// "saga.<Saga>.<Name>".
	Saga    string
	Name    string
	Handler Handler
	// Duration, when set, returns how many ticks of simulation time the
	// execute of cmd takes. The runtime answers "working" at once and runs
	// the execute when the clock reaches the command's tick plus the
	// duration; the executes due at one tick run side by side, as many at
	// a time as the agent's concurrency.
	Duration func(cmd *messages.Command) int64
}

// Ticks returns how many ticks of simulation time the execute of cmd
// takes, as s.Duration says (0 without one). A Duration that panics does
// not stop the process: Ticks returns the panic as an error naming the
// file and line where it happened, as [Handler.Run] does, and the runtime
// answers the execute with it, a transient error.
func (s *Step) Ticks(cmd *messages.Command) (d int64, err error) {
	if s.Duration == nil {
		return 0, nil
	}
	defer func() {
		if v := recover(); v != nil {
			d, err = 0, fmt.Errorf("execute %s: duration panicked at %s: %v", cmd.Step, PanicSite(), v)
		}
	}()
	return s.Duration(cmd), nil
}

// Run calls h's execute or compensate, as cmd's action says, and returns
// what it returns (a compensation has no output). A handler that panics
// does not stop the process: Run returns the panic as a transient error
// naming the file and line where it happened, so the command is retried
// and, once its attempts are spent, the saga rolls back (or, for a
// compensation, fails) as for any other transient error.
func (h Handler) Run(ctx context.Context, tx Tx, cmd *messages.Command) (out messages.Context, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, err = nil, fmt.Errorf("%s %s handler panicked at %s: %v", cmd.Action, cmd.Step, PanicSite(), v)
		}
	}()
	if cmd.Action == messages.Execute {
		return h.Execute(ctx, tx, cmd)
	}
	return nil, h.Compensate(ctx, tx, cmd)
}

// PanicSite returns "file.go:line" of the frame that panicked, called
// from the deferred function that recovered: the first frame below it
// that is not the runtime's. A runtime that calls a model's code names
// with it where that code panicked.
func PanicSite() string {
	pcs := make([]uintptr, 32)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			return fmt.Sprintf("%s:%d", filepath.Base(f.File), f.Line)
		}
		if !more {
			return "an unknown place"
		}
	}
}

// rejectError is a business rejection.
type rejectError struct{ reason string }

func (e *rejectError) Error() string { return e.reason }

// Reject returns the error an execute returns for a business rejection,
// such as an exhausted budget: the saga rolls back and the command is not
// retried. Any other error a handler returns is transient and retried. A
// compensation must not reject: one that does is answered as a transient
// error, sent again up to its definition's compensation retry, and then
// the saga ends failed ([Conclude]). A rejection needs a reason on the
// wire: an empty one is [NoReason].
func Reject(format string, args ...any) error {
	reason := fmt.Sprintf(format, args...)
	if reason == "" {
		reason = NoReason
	}
	return &rejectError{reason: reason}
}

// NoReason is the reason of a rejection that gave none.
const NoReason = "rejected (the handler gave no reason)"

// IsReject reports whether err is, or wraps, a business rejection, and
// returns its reason.
func IsReject(err error) (string, bool) {
	var r *rejectError
	if errors.As(err, &r) {
		return r.reason, true
	}
	return "", false
}
