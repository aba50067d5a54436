package wirejson

import (
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// The known values of a command's action and a reply's outcome: decoding
// shares these strings rather than allocating.
var (
	actions  = []string{string(messages.Execute), string(messages.Compensate)}
	outcomes = []string{string(messages.OK), string(messages.Failed), string(messages.Error), string(messages.Working)}
)

var commandCodec = newCodec(
	integer("V", func(c *messages.Command) *int { return &c.V }),
	str("SagaID", func(c *messages.Command) *string { return &c.SagaID }),
	str("Saga", func(c *messages.Command) *string { return &c.Saga }),
	str("Step", func(c *messages.Command) *string { return &c.Step }),
	named("Action", func(c *messages.Command) *messages.Action { return &c.Action }, actions...),
	integer("Attempt", func(c *messages.Command) *int { return &c.Attempt }),
	integer("Seq", func(c *messages.Command) *int { return &c.Seq }),
	integer64("Tick", func(c *messages.Command) *int64 { return &c.Tick }),
	integer64("Rank", func(c *messages.Command) *int64 { return &c.Rank }),
	rawMap("Context", func(c *messages.Command) *messages.Context { return &c.Context }),
)

var replyCodec = newCodec(
	integer("V", func(r *messages.Reply) *int { return &r.V }),
	str("SagaID", func(r *messages.Reply) *string { return &r.SagaID }),
	str("Saga", func(r *messages.Reply) *string { return &r.Saga }),
	str("Step", func(r *messages.Reply) *string { return &r.Step }),
	named("Action", func(r *messages.Reply) *messages.Action { return &r.Action }, actions...),
	integer("Attempt", func(r *messages.Reply) *int { return &r.Attempt }),
	integer("Seq", func(r *messages.Reply) *int { return &r.Seq }),
	named("Outcome", func(r *messages.Reply) *messages.Outcome { return &r.Outcome }, outcomes...),
	str("Reason", func(r *messages.Reply) *string { return &r.Reason }),
	rawMap("Output", func(r *messages.Reply) *messages.Context { return &r.Output }),
	integer64("Until", func(r *messages.Reply) *int64 { return &r.Until }),
	str("Agent", func(r *messages.Reply) *string { return &r.Agent }),
	str("Role", func(r *messages.Reply) *string { return &r.Role }),
)

var eventCodec = newCodec(
	integer("V", func(ev *messages.Event) *int { return &ev.V }),
	str("SagaID", func(ev *messages.Event) *string { return &ev.SagaID }),
	str("Saga", func(ev *messages.Event) *string { return &ev.Saga }),
	str("Status", func(ev *messages.Event) *string { return &ev.Status }),
	integer64("Tick", func(ev *messages.Event) *int64 { return &ev.Tick }),
	str("Step", func(ev *messages.Event) *string { return &ev.Step }),
	str("Reason", func(ev *messages.Event) *string { return &ev.Reason }),
)

// AppendCommand appends c's JSON encoding, the bytes json.Marshal(c)
// returns, to dst. It returns an error when a context value is not valid
// JSON.
func AppendCommand(dst []byte, c *messages.Command) ([]byte, error) {
	dst, err := commandCodec.append(dst, c)
	if err != nil {
		return dst, fmt.Errorf("encode command: %w", err)
	}
	return dst, nil
}

// AppendReply appends r's JSON encoding, the bytes json.Marshal(r) returns,
// to dst. It returns an error when an output value is not valid JSON.
func AppendReply(dst []byte, r *messages.Reply) ([]byte, error) {
	dst, err := replyCodec.append(dst, r)
	if err != nil {
		return dst, fmt.Errorf("encode reply: %w", err)
	}
	return dst, nil
}

// AppendEvent appends ev's JSON encoding, the bytes json.Marshal(ev)
// returns, to dst.
func AppendEvent(dst []byte, ev *messages.Event) []byte {
	dst, _ = eventCodec.append(dst, ev) // an event holds no raw JSON: it cannot fail
	return dst
}

// DecodeCommand parses and validates a command, exactly as
// [messages.Decode] and [messages.Command.Validate] would, without
// reflection.
func DecodeCommand(data []byte) (messages.Command, error) {
	var c messages.Command
	if err := decodeWith(data, func() (err error) { c, err = commandCodec.decodeAll(data); return err }, &c.V); err != nil {
		return c, fmt.Errorf("decode command: %w", err)
	}
	return c, c.Validate()
}

// DecodeReply parses and validates a reply, exactly as [messages.Decode]
// and [messages.Reply.Validate] would, without reflection.
func DecodeReply(data []byte) (messages.Reply, error) {
	var r messages.Reply
	if err := decodeWith(data, func() (err error) { r, err = replyCodec.decodeAll(data); return err }, &r.V); err != nil {
		return r, fmt.Errorf("decode reply: %w", err)
	}
	return r, r.Validate()
}

// DecodeEvent parses an event of version 1, as [messages.Decode] would,
// without reflection.
func DecodeEvent(data []byte) (messages.Event, error) {
	var ev messages.Event
	if err := decodeWith(data, func() (err error) { ev, err = eventCodec.decodeAll(data); return err }, &ev.V); err != nil {
		return ev, fmt.Errorf("decode event: %w", err)
	}
	return ev, nil
}

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
