package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/natsaga/natsaga/messages"
)

// Decision is what the barrier rules make of a command, given the record
// of its branch.
type Decision int

// The decisions of [Decide].
const (
	// Run: the action has no final result yet; run the handler, then
	// record what [Conclude] says.
	Run Decision = iota
	// Answer: the action's result is recorded; answer from the record
	// ([messages.Result.Reply]) and apply nothing. The command is a duplicate.
	Answer
	// Refuse: an execute that arrived after its compensation; answer
	// [Refusal] and apply nothing.
	Refuse
	// NothingToUndo: a compensation whose execute never took effect;
	// record [NoopResult] as its result, so a late execute is refused.
	NothingToUndo
	// Wait: a compensation whose execute has claimed the branch (a
	// pending result, which agents wrote before an action's state until
	// December 2026) and is still writing; have the command delivered
	// again later.
	Wait
)

// String names d.
func (d Decision) String() string {
	switch d {
	case Run:
		return "run"
	case Answer:
		return "answer"
	case Refuse:
		return "refuse"
	case NothingToUndo:
		return "nothing to undo"
	case Wait:
		return "wait"
	}
	return "unknown"
}

// Decide applies the barrier rules to a command for action, given the
// record of its branch (the zero record when there is none).
func Decide(rec messages.Record, action messages.Action) Decision {
	if action == messages.Execute {
		switch {
		case rec.Compensate != nil:
			return Refuse
		case rec.Execute.Done():
			return Answer
		}
		return Run
	}
	switch {
	case rec.Compensate.Done():
		return Answer
	case rec.Execute != nil && rec.Execute.Pending:
		return Wait
	case rec.Execute == nil || rec.Execute.Outcome != messages.OK:
		return NothingToUndo
	}
	return Run
}

// WriteFound reports whether recorded, the result another run of an
// action recorded first, can be that run's finding of a value this run
// wrote (the value's envelope naming the action with output): such a run
// applies nothing and records OK with that output. Any other result was
// reached without the write (a rejection, or a result from a value read
// before the write landed), so the write is an effect no record accounts
// for, and must be undone. Outputs are compared as JSON, whatever their
// spacing; no output and an empty one are the same.
func WriteFound(recorded *messages.Result, output messages.Context) bool {
	if recorded == nil || recorded.Outcome != messages.OK || len(recorded.Output) != len(output) {
		return false
	}
	for k, v := range output {
		w, ok := recorded.Output[k]
		if !ok || !sameJSON(v, w) {
			return false
		}
	}
	return true
}

// sameJSON reports whether a and b are the same JSON text but for
// insignificant space.
func sameJSON(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// RefusalReason is the reason of [Refusal].
const RefusalReason = "refused: the step's compensation came first; this execute is late"

// Refusal is the reply to an execute that arrived after its compensation.
func Refusal(cmd *messages.Command) messages.Reply {
	return messages.ReplyTo(cmd, messages.Failed, RefusalReason)
}

// NoopResult is the result recorded for cmd, a compensation that found
// nothing to undo, at time at.
func NoopResult(cmd *messages.Command, at time.Time) *messages.Result {
	return &messages.Result{Outcome: messages.OK, Noop: true, Seq: cmd.Seq, At: at, Reason: "nothing to undo"}
}

// Conclusion is what the barrier makes of a handler's return.
type Conclusion struct {
	// Result, when set, is the action's result to record; the handler's
	// writes are committed with it only when Keep is set (a success, not
	// a rejection).
	Result *messages.Result
	Keep   bool
	// Reply, when Result is nil and Redeliver is false, is the reply to
	// send: the action failed transiently, or a compensation was rejected,
	// and nothing is recorded, so a later command tries again.
	Reply messages.Reply
	// Redeliver is set when the command must not be answered at all but
	// delivered again: a claimed execute must end with a recorded result,
	// or its compensation would wait for ever.
	Redeliver bool
}

// Conclude says what the handler's return (out, err) for cmd makes of the
// branch, at time at. claimed is set when an earlier run of the action had
// claimed the branch (its result is pending). maxOutput bounds an
// execute's output as JSON ([messages.MaxOutputFor] the server's payload
// limit).
//
//   - success: record OK with out, and commit the writes;
//   - a rejected execute: record Failed with the reason, drop the writes;
//   - a rejected compensate: record nothing, reply Failed; it is retried;
//   - a transient error: record nothing, reply Error; it is retried, except
//     that a claimed execute is delivered again unanswered;
//   - an output that [CheckOutput] refuses: as a transient error (the
//     coordinator could not take the answer, and the store could not
//     record it).
//
// A reason is cut to [messages.MaxReason] bytes, as the saga keeps it.
func Conclude(cmd *messages.Command, out messages.Context, err error, claimed bool, at time.Time, maxOutput int) Conclusion {
	if err == nil && cmd.Action == messages.Execute {
		if cerr := CheckOutput(out, maxOutput); cerr != nil {
			err = fmt.Errorf("execute %s: %w", cmd.Step, cerr)
		}
	}
	if err == nil {
		return Conclusion{Result: &messages.Result{Outcome: messages.OK, Output: out, Seq: cmd.Seq, At: at}, Keep: true}
	}
	reason, rejected := IsReject(err)
	reason = messages.ClipReason(reason)
	switch {
	case rejected && cmd.Action == messages.Execute:
		return Conclusion{Result: &messages.Result{Outcome: messages.Failed, Reason: reason, Seq: cmd.Seq, At: at}}
	case rejected:
		return Conclusion{Reply: messages.ReplyTo(cmd, messages.Failed, reason)}
	case claimed && cmd.Action == messages.Execute:
		return Conclusion{Redeliver: true}
	}
	return Conclusion{Reply: messages.ReplyTo(cmd, messages.Error, messages.ClipReason(err.Error()))}
}

// CheckOutput returns an error wrapping [messages.ErrBadRequest] when a
// value of out is not JSON in UTF-8, and one wrapping
// [messages.ErrTooLarge] when out may take more than max bytes as JSON,
// written as a record writes it (which escapes <, > and &, six bytes
// each): an output no record can hold, or the coordinator would refuse.
func CheckOutput(out messages.Context, max int) error {
	bad := false
	for _, v := range out {
		bad = bad || !validJSON(v)
	}
	if bad {
		// Said of the first in order, whatever the map's.
		for _, k := range slices.Sorted(maps.Keys(out)) {
			if !validJSON(out[k]) {
				return fmt.Errorf("output %s: not JSON in UTF-8: %w", messages.Quote(k), messages.ErrBadRequest)
			}
		}
	}
	if size, _ := out.Measure(); size > max {
		return fmt.Errorf("output of %d bytes as JSON, more than %d (an eighth of the server's payload limit, less 1 KiB): %w",
			size, max, messages.ErrTooLarge)
	}
	return nil
}

// validJSON reports whether v is one JSON value in UTF-8, as the
// coordinator takes it: json.Valid alone lets a string's bytes be any.
func validJSON(v []byte) bool { return json.Valid(v) && utf8.Valid(v) }

// Verdict says how a store disposed of a command.
type Verdict int

// The verdicts.
const (
	// Applied: the action took effect now (or was a business rejection,
	// recorded now).
	Applied Verdict = iota
	// Duplicate: the action had already been recorded; the stored result
	// was returned and nothing was applied.
	Duplicate
	// Refused: an execute that arrived after its compensation.
	Refused
	// Noop: a compensation whose execute never took effect.
	Noop
	// Transient: the handler failed transiently, or a compensation was
	// rejected; nothing was recorded.
	Transient
)

// String names v as the logs do.
func (v Verdict) String() string {
	switch v {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case Refused:
		return "refused"
	case Noop:
		return "noop"
	case Transient:
		return "transient"
	}
	return "unknown"
}
