package wirejson

import (
	"errors"
	"fmt"

	"github.com/natsaga/natsaga/messages"
)

// AppendCommandBatch appends a [messages.CommandBatch] of commands, each
// already encoded by [AppendCommand], to dst.
func AppendCommandBatch(dst []byte, commands [][]byte) []byte {
	dst = append(dst, `{"v":2,"commands":[`...)
	for i, c := range commands {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, c...)
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
	if len(data) > messages.MaxPayload {
		return nil, fmt.Errorf("command batch: %d bytes, limit %d: %w", len(data), messages.MaxPayload, messages.ErrTooLarge)
	}
	var (
		v        int
		commands [][]byte
	)
	d := NewDecoder(data)
	err := d.Object(func(key []byte) error {
		switch string(key) {
		case "v":
			return d.IntOf(&v)
		case "commands":
			return d.Array(func() error {
				if len(commands) == messages.MaxBatch {
					return errTooMany
				}
				raw, err := d.Raw()
				commands = append(commands, raw)
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
		return nil, fmt.Errorf("command batch: more than %d commands: %w", messages.MaxBatch, messages.ErrBadRequest)
	case err != nil:
		return nil, fmt.Errorf("command batch: %w: %w", messages.ErrBadRequest, err)
	case v != messages.BatchVersion:
		return nil, fmt.Errorf("command batch: version %d, want %d: %w", v, messages.BatchVersion, messages.ErrVersion)
	case len(commands) == 0:
		return nil, fmt.Errorf("command batch: no commands: %w", messages.ErrBadRequest)
	}
	return commands, nil
}

var errTooMany = errors.New("too many commands")
