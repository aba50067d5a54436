package messages

import (
	"bytes"
	"fmt"

	"github.com/natsaga/natsaga/internal/wirejson"
)

// The hot payloads, commands, replies and events, are encoded and decoded
// without reflection. The struct tags above stay the definition of the
// format: codec_test.go checks, against encoding/json, that these
// functions write the same bytes and read the same values.

// AppendJSON appends c's JSON encoding, the bytes json.Marshal(c) returns,
// to dst. It returns an error when a context value is not valid JSON.
func (c *Command) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"v":`...)
	dst = wirejson.AppendInt(dst, int64(c.V))
	dst = append(dst, `,"saga_id":`...)
	dst = wirejson.AppendString(dst, c.SagaID)
	dst = append(dst, `,"saga":`...)
	dst = wirejson.AppendString(dst, c.Saga)
	dst = append(dst, `,"step":`...)
	dst = wirejson.AppendString(dst, c.Step)
	dst = append(dst, `,"action":`...)
	dst = wirejson.AppendString(dst, string(c.Action))
	dst = append(dst, `,"attempt":`...)
	dst = wirejson.AppendInt(dst, int64(c.Attempt))
	dst = append(dst, `,"seq":`...)
	dst = wirejson.AppendInt(dst, int64(c.Seq))
	dst = append(dst, `,"tick":`...)
	dst = wirejson.AppendInt(dst, c.Tick)
	if c.Rank != 0 {
		dst = append(dst, `,"rank":`...)
		dst = wirejson.AppendInt(dst, c.Rank)
	}
	dst = append(dst, `,"context":`...)
	dst, err := wirejson.AppendRawMap(dst, c.Context)
	if err != nil {
		return dst, fmt.Errorf("encode command context: %w", err)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends r's JSON encoding, the bytes json.Marshal(r) returns,
// to dst. It returns an error when an output value is not valid JSON.
func (r *Reply) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"v":`...)
	dst = wirejson.AppendInt(dst, int64(r.V))
	dst = append(dst, `,"saga_id":`...)
	dst = wirejson.AppendString(dst, r.SagaID)
	dst = append(dst, `,"saga":`...)
	dst = wirejson.AppendString(dst, r.Saga)
	dst = append(dst, `,"step":`...)
	dst = wirejson.AppendString(dst, r.Step)
	dst = append(dst, `,"action":`...)
	dst = wirejson.AppendString(dst, string(r.Action))
	dst = append(dst, `,"attempt":`...)
	dst = wirejson.AppendInt(dst, int64(r.Attempt))
	dst = append(dst, `,"seq":`...)
	dst = wirejson.AppendInt(dst, int64(r.Seq))
	dst = append(dst, `,"outcome":`...)
	dst = wirejson.AppendString(dst, string(r.Outcome))
	if r.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = wirejson.AppendString(dst, r.Reason)
	}
	if len(r.Output) > 0 {
		dst = append(dst, `,"output":`...)
		var err error
		if dst, err = wirejson.AppendRawMap(dst, r.Output); err != nil {
			return dst, fmt.Errorf("encode reply output: %w", err)
		}
	}
	if r.Until != 0 {
		dst = append(dst, `,"until":`...)
		dst = wirejson.AppendInt(dst, r.Until)
	}
	if r.Agent != "" {
		dst = append(dst, `,"agent":`...)
		dst = wirejson.AppendString(dst, r.Agent)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends ev's JSON encoding, the bytes json.Marshal(ev)
// returns, to dst.
func (ev *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = wirejson.AppendInt(dst, int64(ev.V))
	dst = append(dst, `,"saga_id":`...)
	dst = wirejson.AppendString(dst, ev.SagaID)
	dst = append(dst, `,"saga":`...)
	dst = wirejson.AppendString(dst, ev.Saga)
	dst = append(dst, `,"status":`...)
	dst = wirejson.AppendString(dst, ev.Status)
	dst = append(dst, `,"tick":`...)
	dst = wirejson.AppendInt(dst, ev.Tick)
	if ev.Step != "" {
		dst = append(dst, `,"step":`...)
		dst = wirejson.AppendString(dst, ev.Step)
	}
	if ev.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = wirejson.AppendString(dst, ev.Reason)
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
func decodeCommand(data []byte, c *Command) error {
	d := wirejson.NewDecoder(data)
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
func decodeReply(data []byte, r *Reply) error {
	d := wirejson.NewDecoder(data)
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

func decodeAction(d *wirejson.Decoder, a *Action) error {
	s := string(*a)
	err := d.StringOf(&s, string(Execute), string(Compensate))
	*a = Action(s)
	return err
}

func decodeOutcome(d *wirejson.Decoder, o *Outcome) error {
	s := string(*o)
	err := d.StringOf(&s, string(OK), string(Failed), string(Error), string(Working))
	*o = Outcome(s)
	return err
}

func decodeContext(d *wirejson.Decoder, c *Context) error {
	return wirejson.RawMap(d, c)
}
