package wirejson

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// LogMessage is a message of a log of many keys' values (internal/kvlog),
// as it is stored: the records of the commands a role's copy committed at
// once, and the coordinator's active sagas. Every copy of a role, and the
// coordinator, reads every message of the logs it follows.
type LogMessage struct {
	ID      string     `json:"id"`
	Entries []LogEntry `json:"entries"`
}

// LogEntry is one write of a [LogMessage].
type LogEntry struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

var logEntryCodec = newCodec(
	str("Key", func(e *LogEntry) *string { return &e.Key }),
	raw("Value", func(e *LogEntry) *json.RawMessage { return &e.Value }),
)

var logMessageCodec = newCodec(
	str("ID", func(m *LogMessage) *string { return &m.ID }),
	objectList("Entries", func() *codec[LogEntry] { return logEntryCodec }, func(m *LogMessage) *[]LogEntry { return &m.Entries }),
)

// DecodeLogMessage reads a message of a log, one JSON value and nothing
// after it, into what json.Unmarshal makes of it, without reflection. Each
// value is a copy, not a slice of data. It returns an error wrapping
// [ErrSyntax] or [ErrType] where json.Unmarshal returns one.
func DecodeLogMessage(data []byte) (LogMessage, error) {
	m, err := logMessageCodec.decodeAll(data)
	if err != nil {
		return LogMessage{}, fmt.Errorf("decode log message: %w", err)
	}
	return m, nil
}

// raw binds a raw JSON value, written compact as json.Marshal writes a
// json.RawMessage, and read as a copy of the value's bytes ("null" for a
// null, as json.RawMessage reads it).
func raw[T any](goName string, p func(*T) *json.RawMessage) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) { return AppendRaw(dst, *p(v)) },
		dec: func(d *Decoder, v *T) error {
			b, err := d.Raw()
			if err == nil {
				*p(v) = bytes.Clone(b)
			}
			return err
		},
		empty: func(v *T) bool { return len(*p(v)) == 0 },
	}
}

// objectList binds a list of structs that have a codec of their own,
// written null when nil.
func objectList[T, E any](goName string, c func() *codec[E], p func(*T) *[]E) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) {
			return appendList(dst, *p(v), func(dst []byte, e *E) ([]byte, error) { return c().append(dst, e) })
		},
		dec: func(d *Decoder, v *T) error {
			return list(d, p(v), func(e *E) error { return c().decode(d, e) })
		},
		empty: func(v *T) bool { return len(*p(v)) == 0 },
	}
}
