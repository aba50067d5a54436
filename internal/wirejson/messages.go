package wirejson

import (
	"bytes"
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// AppendCommand appends c's JSON encoding, the bytes json.Marshal(c) returns,
// to dst. It returns an error when a context value is not valid JSON.
func AppendCommand(dst []byte, c *messages.Command) ([]byte, error) {
	dst = append(dst, `{"v":`...)
	dst = AppendInt(dst, int64(c.V))
	dst = append(dst, `,"saga_id":`...)
	dst = AppendString(dst, c.SagaID)
	dst = append(dst, `,"saga":`...)
	dst = AppendString(dst, c.Saga)
	dst = append(dst, `,"step":`...)
	dst = AppendString(dst, c.Step)
	dst = append(dst, `,"action":`...)
	dst = AppendString(dst, string(c.Action))
	dst = append(dst, `,"attempt":`...)
	dst = AppendInt(dst, int64(c.Attempt))
	dst = append(dst, `,"seq":`...)
	dst = AppendInt(dst, int64(c.Seq))
	dst = append(dst, `,"tick":`...)
	dst = AppendInt(dst, c.Tick)
	if c.Rank != 0 {
		dst = append(dst, `,"rank":`...)
		dst = AppendInt(dst, c.Rank)
	}
	dst = append(dst, `,"context":`...)
	dst, err := AppendRawMap(dst, c.Context)
	if err != nil {
		return dst, fmt.Errorf("encode command context: %w", err)
	}
	return append(dst, '}'), nil
}

// AppendReply appends r's JSON encoding, the bytes json.Marshal(r) returns,
// to dst. It returns an error when an output value is not valid JSON.
func AppendReply(dst []byte, r *messages.Reply) ([]byte, error) {
	dst = append(dst, `{"v":`...)
	dst = AppendInt(dst, int64(r.V))
	dst = append(dst, `,"saga_id":`...)
	dst = AppendString(dst, r.SagaID)
	dst = append(dst, `,"saga":`...)
	dst = AppendString(dst, r.Saga)
	dst = append(dst, `,"step":`...)
	dst = AppendString(dst, r.Step)
	dst = append(dst, `,"action":`...)
	dst = AppendString(dst, string(r.Action))
	dst = append(dst, `,"attempt":`...)
	dst = AppendInt(dst, int64(r.Attempt))
	dst = append(dst, `,"seq":`...)
	dst = AppendInt(dst, int64(r.Seq))
	dst = append(dst, `,"outcome":`...)
	dst = AppendString(dst, string(r.Outcome))
	if r.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = AppendString(dst, r.Reason)
	}
	if len(r.Output) > 0 {
		dst = append(dst, `,"output":`...)
		var err error
		if dst, err = AppendRawMap(dst, r.Output); err != nil {
			return dst, fmt.Errorf("encode reply output: %w", err)
		}
	}
	if r.Until != 0 {
		dst = append(dst, `,"until":`...)
		dst = AppendInt(dst, r.Until)
	}
	if r.Agent != "" {
		dst = append(dst, `,"agent":`...)
		dst = AppendString(dst, r.Agent)
	}
	return append(dst, '}'), nil
}

// AppendEvent appends ev's JSON encoding, the bytes json.Marshal(ev)
// returns, to dst.
func AppendEvent(dst []byte, ev *messages.Event) []byte {
	dst = append(dst, `{"v":`...)
	dst = AppendInt(dst, int64(ev.V))
	dst = append(dst, `,"saga_id":`...)
	dst = AppendString(dst, ev.SagaID)
	dst = append(dst, `,"saga":`...)
	dst = AppendString(dst, ev.Saga)
	dst = append(dst, `,"status":`...)
	dst = AppendString(dst, ev.Status)
	dst = append(dst, `,"tick":`...)
	dst = AppendInt(dst, ev.Tick)
	if ev.Step != "" {
		dst = append(dst, `,"step":`...)
		dst = AppendString(dst, ev.Step)
	}
	if ev.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = AppendString(dst, ev.Reason)
	}
	return append(dst, '}')
}

// field matches a JSON key to a field name as encoding/json does: exactly,
// or else ignoring case.
func field(key []byte, name string) bool {
	return string(key) == name || bytes.EqualFold(key, []byte(name))
}

// decodeCommand parses data into c as json.Unmarshal(data, c) would; on
// error c may be partly filled.
func decodeCommand(data []byte, c *messages.Command) error {
	d := NewDecoder(data)
	err := d.Object(func(key []byte) error {
		switch {
		case field(key, "v"):
			return d.IntOf(&c.V)
		case field(key, "saga_id"):
			return d.String(&c.SagaID)
		case field(key, "saga"):
			return d.String(&c.Saga)
		case field(key, "step"):
			return d.String(&c.Step)
		case field(key, "action"):
			return decodeAction(d, &c.Action)
		case field(key, "attempt"):
			return d.IntOf(&c.Attempt)
		case field(key, "seq"):
			return d.IntOf(&c.Seq)
		case field(key, "tick"):
			return d.Int(&c.Tick)
		case field(key, "rank"):
			return d.Int(&c.Rank)
		case field(key, "context"):
			return decodeContext(d, &c.Context)
		}
		return d.Skip()
	})
	if err != nil {
		return err
	}
	return d.End()
}

// decodeReply parses data into r as json.Unmarshal(data, r) would; on error
// r may be partly filled.
func decodeReply(data []byte, r *messages.Reply) error {
	d := NewDecoder(data)
	err := d.Object(func(key []byte) error {
		switch {
		case field(key, "v"):
			return d.IntOf(&r.V)
		case field(key, "saga_id"):
			return d.String(&r.SagaID)
		case field(key, "saga"):
			return d.String(&r.Saga)
		case field(key, "step"):
			return d.String(&r.Step)
		case field(key, "action"):
			return decodeAction(d, &r.Action)
		case field(key, "attempt"):
			return d.IntOf(&r.Attempt)
		case field(key, "seq"):
			return d.IntOf(&r.Seq)
		case field(key, "outcome"):
			return decodeOutcome(d, &r.Outcome)
		case field(key, "reason"):
			return d.String(&r.Reason)
		case field(key, "output"):
			return decodeContext(d, &r.Output)
		case field(key, "until"):
			return d.Int(&r.Until)
		case field(key, "agent"):
			return d.String(&r.Agent)
		}
		return d.Skip()
	})
	if err != nil {
		return err
	}
	return d.End()
}

func decodeAction(d *Decoder, a *messages.Action) error {
	s := string(*a)
	err := d.StringOf(&s, string(messages.Execute), string(messages.Compensate))
	*a = messages.Action(s)
	return err
}

func decodeOutcome(d *Decoder, o *messages.Outcome) error {
	s := string(*o)
	err := d.StringOf(&s, string(messages.OK), string(messages.Failed), string(messages.Error), string(messages.Working))
	*o = messages.Outcome(s)
	return err
}

func decodeContext(d *Decoder, c *messages.Context) error {
	return RawMap(d, c)
}

// DecodeCommand parses and validates a command, exactly as
// [messages.Decode] and [messages.Command.Validate] would, without reflection.
func DecodeCommand(data []byte) (messages.Command, error) {
	var c messages.Command
	if err := decodeWith(data, func() error { return decodeCommand(data, &c) }, &c.V); err != nil {
		return c, fmt.Errorf("decode command: %w", err)
	}
	return c, c.Validate()
}

// DecodeReply parses and validates a reply, exactly as [messages.Decode]
// and [messages.Reply.Validate] would, without reflection.
func DecodeReply(data []byte) (messages.Reply, error) {
	var r messages.Reply
	if err := decodeWith(data, func() error { return decodeReply(data, &r) }, &r.V); err != nil {
		return r, fmt.Errorf("decode reply: %w", err)
	}
	return r, r.Validate()
}

// decodeWith is Decode with a hand-written parse, which fills a value whose
// version ends up in *version.
func decodeWith(data []byte, parse func() error, version *int) error {
	if len(data) > messages.MaxPayload {
		return fmt.Errorf("%d bytes, limit %d: %w", len(data), messages.MaxPayload, messages.ErrTooLarge)
	}
	if err := parse(); err != nil {
		return fmt.Errorf("%w: %w", messages.ErrBadRequest, err)
	}
	if *version != messages.Version {
		return fmt.Errorf("version %d, want %d: %w", *version, messages.Version, messages.ErrVersion)
	}
	return nil
}
