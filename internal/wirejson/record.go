package wirejson

import (
	"fmt"
	"time"

	"github.com/natsaga/natsaga/messages"
)

var resultCodec = newCodec(
	named("Outcome", func(r *messages.Result) *messages.Outcome { return &r.Outcome }, outcomes...),
	str("Reason", func(r *messages.Result) *string { return &r.Reason }),
	rawMap("Output", func(r *messages.Result) *messages.Context { return &r.Output }),
	integer("Seq", func(r *messages.Result) *int { return &r.Seq }),
	boolean("Noop", func(r *messages.Result) *bool { return &r.Noop }),
	boolean("Pending", func(r *messages.Result) *bool { return &r.Pending }),
	instant("At", func(r *messages.Result) *time.Time { return &r.At }),
)

var recordCodec = newCodec(
	object("Execute", func() *codec[messages.Result] { return resultCodec }, func(r *messages.Record) **messages.Result { return &r.Execute }),
	object("Compensate", func() *codec[messages.Result] { return resultCodec }, func(r *messages.Record) **messages.Result { return &r.Compensate }),
)

// DecodeRecord parses a record as json.Unmarshal does, without reflection,
// and checks that each result it holds has a known outcome. It returns an
// error wrapping [messages.ErrBadRequest] for a malformed record.
func DecodeRecord(data []byte) (messages.Record, error) {
	var r messages.Record
	if len(data) > messages.MaxPayload {
		return r, fmt.Errorf("record of %d bytes: %w", len(data), messages.ErrTooLarge)
	}
	r, err := recordCodec.decodeAll(data)
	for _, res := range []*messages.Result{r.Execute, r.Compensate} {
		if err == nil && res != nil && res.Outcome != "" && !res.Outcome.Valid() {
			err = fmt.Errorf("unknown outcome %q", res.Outcome)
		}
	}
	if err != nil {
		return messages.Record{}, fmt.Errorf("record: %w: %w", messages.ErrBadRequest, err)
	}
	return r, nil
}

// AppendRecord appends r's JSON encoding, the bytes json.Marshal(r)
// returns, to dst, without reflection: the barrier writes a record for
// every action. It returns an error when an output value is not valid JSON
// or a time cannot be encoded.
func AppendRecord(dst []byte, r *messages.Record) ([]byte, error) {
	dst, err := recordCodec.append(dst, r)
	if err != nil {
		return dst, fmt.Errorf("encode record: %w", err)
	}
	return dst, nil
}
