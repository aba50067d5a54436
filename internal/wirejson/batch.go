package wirejson

import (
	"errors"
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// AppendCommandBatch appends a [messages.CommandBatch] of commands, each
// already encoded by [AppendCommand], to dst.
func AppendCommandBatch(dst []byte, commands [][]byte) []byte {
	return appendBatch(dst, `{"v":2,"commands":[`, commands)
}

// AppendEventBatch appends a [messages.EventBatch] of events, each already
// encoded by [AppendEvent], to dst.
func AppendEventBatch(dst []byte, events [][]byte) []byte {
	return appendBatch(dst, `{"v":2,"events":[`, events)
}

func appendBatch(dst []byte, open string, items [][]byte) []byte {
	dst = append(dst, open...)
	for i, item := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, item...)
	}
	return append(dst, "]}"...)
}

// SplitCommandBatch checks the envelope of a [messages.CommandBatch] and
// returns the raw JSON of each of its commands, slices of data, for
// [DecodeCommand] to decode and check one by one. It returns an error
// wrapping [messages.ErrTooLarge], [messages.ErrBadRequest] or
// [messages.ErrVersion] for a batch too large, malformed, of another
// version, empty, or of more than [messages.MaxBatch] commands.
func SplitCommandBatch(data []byte) ([][]byte, error) {
	return splitBatch(data, "command batch", "commands")
}

// DecodeEventBatch decodes a [messages.EventBatch]. It returns an error
// wrapping [messages.ErrTooLarge], [messages.ErrBadRequest] or
// [messages.ErrVersion] for a batch too large, malformed, of another
// version, empty, or of more than [messages.MaxBatch] events, or holding
// an event that does not decode as version 1.
func DecodeEventBatch(data []byte) ([]messages.Event, error) {
	raws, err := splitBatch(data, "event batch", "events")
	if err != nil {
		return nil, err
	}
	events := make([]messages.Event, len(raws))
	for i, raw := range raws {
		if events[i], err = DecodeEvent(raw); err != nil {
			return nil, fmt.Errorf("event batch: event %d: %w", i, err)
		}
	}
	return events, nil
}

// splitBatch checks the envelope of a batch, what, whose items are the
// array key, and returns the raw JSON of each item.
func splitBatch(data []byte, what, key string) ([][]byte, error) {
	if len(data) > messages.MaxPayload {
		return nil, fmt.Errorf("%s: %d bytes, limit %d: %w", what, len(data), messages.MaxPayload, messages.ErrTooLarge)
	}
	var (
		v     int
		items [][]byte
	)
	d := NewDecoder(data)
	err := d.Object(func(k []byte) error {
		switch string(k) {
		case "v":
			return d.IntOf(&v)
		case key:
			items = items[:0] // a key given twice: the last counts, as with encoding/json
			return d.Array(func() error {
				if len(items) == messages.MaxBatch {
					return errTooMany
				}
				raw, err := d.Raw()
				items = append(items, raw)
				return err
			})
		default:
			return d.Skip()
		}
	})
	if err == nil {
		err = d.End()
	}
	switch {
	case errors.Is(err, errTooMany):
		return nil, fmt.Errorf("%s: more than %d %s: %w", what, messages.MaxBatch, key, messages.ErrBadRequest)
	case err != nil:
		return nil, fmt.Errorf("%s: %w: %w", what, messages.ErrBadRequest, err)
	case v != messages.BatchVersion:
		return nil, fmt.Errorf("%s: version %d, want %d: %w", what, v, messages.BatchVersion, messages.ErrVersion)
	case len(items) == 0:
		return nil, fmt.Errorf("%s: no %s: %w", what, key, messages.ErrBadRequest)
	}
	return items, nil
}

var errTooMany = errors.New("too many items")
