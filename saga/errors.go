package saga

import (
	"errors"
	"fmt"
)

// Errors returned by the engine. Test with errors.Is; the returned errors
// wrap these and name the saga or definition concerned.
var (
	// ErrUnknownSaga: no saga with that id is held.
	ErrUnknownSaga = errors.New("unknown saga")
	// ErrUnknownDefinition: no definition with that name or subject.
	ErrUnknownDefinition = errors.New("unknown saga definition")
	// ErrDuplicateDefinition: a definition with that name or subject is
	// already registered.
	ErrDuplicateDefinition = errors.New("conflicts with a registered saga definition")
	// ErrTaken: a definition's name or subject is another definition's
	// name or subject (wrapped with ErrDuplicateDefinition).
	ErrTaken = errors.New("name or subject taken by another definition")
	// ErrOtherContent: a version is registered already with other
	// content (wrapped with ErrDuplicateDefinition).
	ErrOtherContent = errors.New("version registered with other content")
	// ErrStepMoved: a version gives a step to another role than a
	// registered version of its definition does (wrapped with
	// ErrDuplicateDefinition).
	ErrStepMoved = errors.New("step given to another role")
	// ErrInvalidDefinition: the definition does not validate.
	ErrInvalidDefinition = errors.New("invalid saga definition")
	// ErrStale: a reply that matches no outstanding command (a duplicate, a
	// late answer to a command already settled, or an answer for another
	// step). It changes nothing and is safe to drop.
	ErrStale = errors.New("stale reply")
	// ErrBadReply: a reply that cannot belong to the saga it names (an
	// unknown step, or a saga type that is not the saga's).
	ErrBadReply = errors.New("bad reply")
	// ErrNotFailed: a retry was asked for a saga that is not failed.
	ErrNotFailed = errors.New("saga is not failed")
	// ErrIDTaken: a start names the id of a saga of another type.
	ErrIDTaken = errors.New("saga id taken by a saga of another type")
	// ErrTerminal: the saga has already finished.
	ErrTerminal = errors.New("saga already finished")
	// ErrEarly: an answer that came before its time: to a command whose
	// round is not released yet, or a final answer to a working command
	// before the tick its agent declared. It changes nothing; the runtime
	// offers it again later.
	ErrEarly = errors.New("answer before its round or its declared tick")
	// ErrBadNewID: Options.NewID made an id that breaks the rule of every
	// id (messages.CheckToken). The start is refused; the fault is the
	// program's, not the request's.
	ErrBadNewID = errors.New("Options.NewID made a saga id that breaks the rule of identifiers")
)

// IDTaken returns the error, wrapping [ErrIDTaken], of a start of saga
// type want with the id of a saga of type is.
func IDTaken(id ID, is, want string) error {
	return fmt.Errorf("start %s as %q: %w (%q)", id, want, ErrIDTaken, is)
}
