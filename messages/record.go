package messages

import (
	"fmt"
	"time"

	"github.com/natsaga/natsaga/internal/wirejson"
)

// Record is a participant's barrier record of one branch, one step of one
// saga at one role: what its execute and its compensation did. A
// participant stores it on [BranchSubject] in its [StateStream], and the
// coordinator reads a final result there as the agent's answer (see
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
	reply := ReplyTo(cmd, res.Outcome, res.Reason)
	reply.Output = res.Output
	return reply, true
}

// DecodeRecord parses a record as json.Unmarshal does, without reflection,
// and checks that each result it holds has a known outcome. It returns an
// error wrapping [ErrBadRequest] for a malformed record.
func DecodeRecord(data []byte) (Record, error) {
	var r Record
	if len(data) > MaxPayload {
		return r, fmt.Errorf("record of %d bytes: %w", len(data), ErrTooLarge)
	}
	d := wirejson.NewDecoder(data)
	err := d.Object(func(key []byte) error {
		switch {
		case field(key, "execute"):
			return decodeResult(d, &r.Execute)
		case field(key, "compensate"):
			return decodeResult(d, &r.Compensate)
		}
		return d.Skip()
	})
	if err == nil {
		err = d.End()
	}
	if err != nil {
		return Record{}, fmt.Errorf("record: %w: %w", ErrBadRequest, err)
	}
	return r, nil
}

func decodeResult(d *wirejson.Decoder, res **Result) error {
	if d.Null() {
		*res = nil
		return nil
	}
	if *res == nil {
		*res = &Result{}
	}
	r := *res
	err := d.Object(func(key []byte) error {
		switch {
		case field(key, "outcome"):
			return decodeOutcome(d, &r.Outcome)
		case field(key, "reason"):
			return d.String(&r.Reason)
		case field(key, "output"):
			return decodeContext(d, &r.Output)
		case field(key, "seq"):
			return d.IntOf(&r.Seq)
		case field(key, "noop"):
			return d.Bool(&r.Noop)
		case field(key, "pending"):
			return d.Bool(&r.Pending)
		case field(key, "at"):
			var s string
			if err := d.String(&s); err != nil {
				return err
			}
			if err := r.At.UnmarshalText([]byte(s)); err != nil {
				return fmt.Errorf("at: %w", err)
			}
			return nil
		}
		return d.Skip()
	})
	if err == nil && r.Outcome != "" && !r.Outcome.Valid() {
		err = fmt.Errorf("unknown outcome %q", r.Outcome)
	}
	return err
}

// AppendJSON appends r's JSON encoding, the bytes json.Marshal(r) returns,
// to dst, without reflection: the barrier writes a record for every action.
// It returns an error when an output value is not valid JSON or a time
// cannot be encoded.
func (r *Record) AppendJSON(dst []byte) ([]byte, error) {
	var err error
	dst = append(dst, '{')
	if r.Execute != nil {
		dst = append(dst, `"execute":`...)
		if dst, err = r.Execute.appendJSON(dst); err != nil {
			return dst, fmt.Errorf("encode record: execute: %w", err)
		}
	}
	if r.Compensate != nil {
		if r.Execute != nil {
			dst = append(dst, ',')
		}
		dst = append(dst, `"compensate":`...)
		if dst, err = r.Compensate.appendJSON(dst); err != nil {
			return dst, fmt.Errorf("encode record: compensate: %w", err)
		}
	}
	return append(dst, '}'), nil
}

func (r *Result) appendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, '{')
	if r.Outcome != "" {
		dst = append(dst, `"outcome":`...)
		dst = wirejson.AppendString(dst, string(r.Outcome))
		dst = append(dst, ',')
	}
	if r.Reason != "" {
		dst = append(dst, `"reason":`...)
		dst = wirejson.AppendString(dst, r.Reason)
		dst = append(dst, ',')
	}
	if len(r.Output) > 0 {
		var err error
		dst = append(dst, `"output":`...)
		if dst, err = wirejson.AppendRawMap(dst, r.Output); err != nil {
			return dst, err
		}
		dst = append(dst, ',')
	}
	dst = append(dst, `"seq":`...)
	dst = wirejson.AppendInt(dst, int64(r.Seq))
	if r.Noop {
		dst = append(dst, `,"noop":true`...)
	}
	if r.Pending {
		dst = append(dst, `,"pending":true`...)
	}
	at, err := r.At.MarshalJSON()
	if err != nil {
		return dst, err
	}
	dst = append(dst, `,"at":`...)
	dst = append(dst, at...)
	return append(dst, '}'), nil
}
