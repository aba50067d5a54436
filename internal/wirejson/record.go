package wirejson

import (
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// DecodeRecord parses a record as json.Unmarshal does, without reflection,
// and checks that each result it holds has a known outcome. It returns an
// error wrapping [messages.ErrBadRequest] for a malformed record.
func DecodeRecord(data []byte) (messages.Record, error) {
	var r messages.Record
	if len(data) > messages.MaxPayload {
		return r, fmt.Errorf("record of %d bytes: %w", len(data), messages.ErrTooLarge)
	}
	d := NewDecoder(data)
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
		return messages.Record{}, fmt.Errorf("record: %w: %w", messages.ErrBadRequest, err)
	}
	return r, nil
}

func decodeResult(d *Decoder, res **messages.Result) error {
	if d.Null() {
		*res = nil
		return nil
	}
	if *res == nil {
		*res = &messages.Result{}
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

// AppendRecord appends r's JSON encoding, the bytes json.Marshal(r) returns,
// to dst, without reflection: the barrier writes a record for every action.
// It returns an error when an output value is not valid JSON or a time
// cannot be encoded.
func AppendRecord(dst []byte, r *messages.Record) ([]byte, error) {
	var err error
	dst = append(dst, '{')
	if r.Execute != nil {
		dst = append(dst, `"execute":`...)
		if dst, err = appendResult(dst, r.Execute); err != nil {
			return dst, fmt.Errorf("encode record: execute: %w", err)
		}
	}
	if r.Compensate != nil {
		if r.Execute != nil {
			dst = append(dst, ',')
		}
		dst = append(dst, `"compensate":`...)
		if dst, err = appendResult(dst, r.Compensate); err != nil {
			return dst, fmt.Errorf("encode record: compensate: %w", err)
		}
	}
	return append(dst, '}'), nil
}

func appendResult(dst []byte, r *messages.Result) ([]byte, error) {
	dst = append(dst, '{')
	if r.Outcome != "" {
		dst = append(dst, `"outcome":`...)
		dst = AppendString(dst, string(r.Outcome))
		dst = append(dst, ',')
	}
	if r.Reason != "" {
		dst = append(dst, `"reason":`...)
		dst = AppendString(dst, r.Reason)
		dst = append(dst, ',')
	}
	if len(r.Output) > 0 {
		var err error
		dst = append(dst, `"output":`...)
		if dst, err = AppendRawMap(dst, r.Output); err != nil {
			return dst, err
		}
		dst = append(dst, ',')
	}
	dst = append(dst, `"seq":`...)
	dst = AppendInt(dst, int64(r.Seq))
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
