package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// Tx is a handler's view of its role's state during one command. Values are
// JSON-encoded. Writes take effect only when the command's result is
// recorded, and together with it.
type Tx interface {
	// Get decodes the state value key into v. It reports false, leaving v
	// untouched, when key has no value yet. A handler that reads several
	// keys must read them in one fixed order.
	Get(key string, v any) (bool, error)
	// Put sets the state value key to v when the command commits. key must
	// have been read with Get in the same transaction.
	Put(key string, v any) error
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
// [Reject] for a business rejection.
type Handler struct {
	Execute    func(ctx context.Context, tx Tx, cmd *messages.Command) (messages.Context, error)
	Compensate func(ctx context.Context, tx Tx, cmd *messages.Command) error
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

// Run calls h's execute or compensate, as cmd's action says, and returns
// what it returns (a compensation has no output).
func (h Handler) Run(ctx context.Context, tx Tx, cmd *messages.Command) (messages.Context, error) {
	if cmd.Action == messages.Execute {
		return h.Execute(ctx, tx, cmd)
	}
	return nil, h.Compensate(ctx, tx, cmd)
}

// rejectError is a business rejection.
type rejectError struct{ reason string }

func (e *rejectError) Error() string { return e.reason }

// Reject returns the error a handler returns for a business rejection, such
// as an exhausted budget: the saga rolls back and the command is not
// retried. Any other error a handler returns is transient and retried.
func Reject(format string, args ...any) error {
	return &rejectError{reason: fmt.Sprintf(format, args...)}
}

// IsReject reports whether err is, or wraps, a business rejection, and
// returns its reason.
func IsReject(err error) (string, bool) {
	var r *rejectError
	if errors.As(err, &r) {
		return r.reason, true
	}
	return "", false
}
