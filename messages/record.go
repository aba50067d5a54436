package messages

import (
	"fmt"
	"time"
)

// Record is a participant's barrier record of one branch, one step of one
// saga at one role: what its execute and its compensation did. A
// participant stores it under [RecordKey] in its role's [RecordStream],
// many records a message, and the coordinator reads a final result there
// as the agent's answer (see
// [Record.Answer]): an agent built on natsaga's participant package
// answers a command it records through the record alone.
type Record struct {
	Execute    *Result `json:"execute,omitempty"`
	Compensate *Result `json:"compensate,omitempty"`
}

// Result is the recorded result of one action of a branch.
type Result struct {
	Outcome Outcome `json:"outcome,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Output  Context `json:"output,omitempty"`
	// Seq is the saga sequence number of the command that took effect.
	Seq int `json:"seq"`
	// Noop is set on a compensation that found nothing to undo.
	Noop bool `json:"noop,omitempty"`
	// Pending is set while the action is writing its state: the action
	// has claimed the branch, and its outcome is not known yet.
	Pending bool      `json:"pending,omitempty"`
	At      time.Time `json:"at"`
}

// Done reports whether r is a final result.
func (r *Result) Done() bool { return r != nil && !r.Pending }

// Final reports whether no action of r is pending: the record is then
// settled, and may expire.
func (r *Record) Final() bool {
	return (r.Execute == nil || !r.Execute.Pending) && (r.Compensate == nil || !r.Compensate.Pending)
}

// Check returns an error wrapping [ErrBadRequest] when r says what no
// reply may: a final result whose outcome is not ok or failed (a record
// holds only those), or failed without a reason. A claim (Pending) has no
// outcome yet.
func (r *Record) Check() error {
	for _, res := range []*Result{r.Execute, r.Compensate} {
		switch {
		case res == nil || res.Pending:
		case res.Outcome != OK && res.Outcome != Failed:
			return fmt.Errorf("a recorded result's outcome is ok or failed, not %q: %w", res.Outcome, ErrBadRequest)
		case res.Outcome == Failed && res.Reason == "":
			return fmt.Errorf("a failed result needs a reason: %w", ErrBadRequest)
		}
	}
	return nil
}

// Result returns r's result of action a, nil when there is none.
func (r *Record) Result(a Action) *Result {
	if a == Compensate {
		return r.Compensate
	}
	return r.Execute
}

// Answer returns the reply that r gives to cmd, a command for the same
// branch, and false when r holds no final result for cmd's action.
func (r *Record) Answer(cmd *Command) (Reply, bool) {
	res := r.Result(cmd.Action)
	if !res.Done() {
		return Reply{}, false
	}
	return res.Reply(cmd), true
}

// Reply is the reply that the recorded result r gives to cmd.
func (r *Result) Reply(cmd *Command) Reply {
	reply := ReplyTo(cmd, r.Outcome, r.Reason)
	reply.Output = r.Output
	return reply
}
