package client

import (
	"errors"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// The codes of the coordinator's errors, for errors.Is on an [*Error].
var (
	// ErrNotFound: no saga or definition of that name or id.
	ErrNotFound = errors.New(messages.CodeNotFound)
	// ErrBadRequest: the request was refused as malformed or invalid.
	ErrBadRequest = errors.New(messages.CodeBadRequest)
	// ErrConflict: the request conflicts with the saga's or definition's
	// state (a retry of a saga that is not failed, a version registered
	// with other content).
	ErrConflict = errors.New(messages.CodeConflict)
	// ErrBusy: the coordinator holds its limit of sagas in flight, or
	// of reads of its bucket at once (a status, retry or list of a saga
	// no longer in memory, a start with an id), or its term just ended;
	// the request did nothing and may be sent again later.
	ErrBusy = errors.New(messages.CodeBusy)
	// ErrTooLarge: the answer would not fit the server's payload limit (a
	// saga whose state outgrew it).
	ErrTooLarge = errors.New(messages.CodeTooLarge)
	// ErrInternal: the coordinator failed to serve the request.
	ErrInternal = errors.New(messages.CodeInternal)
)

// ErrBadStored is wrapped by [Client.ScanStored] for a value of the saga
// bucket that is not the saga its key names: it does not decode, or it
// holds another saga's id.
var ErrBadStored = errors.New("bad stored saga")

// ErrNeverAdmitted is wrapped, with [ErrBusy], by [Client.Start] and
// [Client.StartMany] for
// a start scheduled for a later tick that the coordinator refuses as busy
// while nothing it holds can end before the clock moves on: its sagas in
// flight (at its -max-active, or holding its -max-active-bytes) all wait
// for a later tick. A driver that ticks
// only once its starts are in would wait for ever.
var ErrNeverAdmitted = errors.New("the start can never be admitted before the clock moves on")

// ErrNotQuiet is returned, wrapped in a [*NotQuietError], when a tick did
// not become quiet within the limit: an agent broke its word, and the run
// can no longer be reproduced.
var ErrNotQuiet = errors.New("the tick is not quiet")

// Error is an error the coordinator answered with.
type Error struct {
	// Subject is the subject of the request.
	Subject string
	// Code is the wire code: one of messages' Code constants.
	Code    string
	Message string
}

// Error returns the subject, the code and the message.
func (e *Error) Error() string { return e.Subject + ": " + e.Code + ": " + e.Message }

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	if e == nil {
		return false
	}
	switch target {
	case ErrNotFound:
		return e.Code == messages.CodeNotFound
	case ErrBadRequest:
		return e.Code == messages.CodeBadRequest
	case ErrConflict:
		return e.Code == messages.CodeConflict
	case ErrBusy:
		return e.Code == messages.CodeBusy
	case ErrTooLarge:
		return e.Code == messages.CodeTooLarge
	case ErrInternal:
		return e.Code == messages.CodeInternal
	}
	return false
}

// wireErr returns the *Error of w, or nil when w is nil.
func wireErr(subject string, w *messages.WireError) error {
	if w == nil {
		return nil
	}
	return &Error{Subject: subject, Code: w.Code, Message: w.Message}
}

// NotQuietError is the error of a tick that did not become quiet: the last
// summary seen, and a few of the sagas whose command had no answer. It
// wraps [ErrNotQuiet].
type NotQuietError struct {
	// Summary is the last summary seen.
	Summary messages.Summary
	// Waiting are up to three active sagas awaiting an answer due at or
	// before the tick, for the reason to name; empty when the
	// coordinator could not list them.
	Waiting []saga.Execution
	// Reason is the error's text: how long nothing was answered, and
	// which sagas wait.
	Reason string
}

// Error returns the reason.
func (e *NotQuietError) Error() string { return e.Reason }

// Unwrap returns [ErrNotQuiet].
func (e *NotQuietError) Unwrap() error { return ErrNotQuiet }
