package participant

import (
	"fmt"

	"github.com/natsaga/natsaga/internal/wirejson"
)

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
