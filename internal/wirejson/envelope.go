package wirejson

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/natsaga/natsaga/messages"
)

// StateEnvelope is how a role's state value is stored on its state stream
// (docs/protocol.md, "State"): the value, the branch actions that wrote it
// and have not yet recorded their result, with the output each will
// record, and the sequence of the role's record log its writers had read.
type StateEnvelope struct {
	Value   json.RawMessage             `json:"value"`
	Ops     map[string]messages.Context `json:"ops,omitempty"`
	Records uint64                      `json:"records,omitempty"`
}

var envelopeCodec = newCodec(
	raw("Value", func(e *StateEnvelope) *json.RawMessage { return &e.Value }),
	contextMap("Ops", func(e *StateEnvelope) *map[string]messages.Context { return &e.Ops }),
	unsigned("Records", func(e *StateEnvelope) *uint64 { return &e.Records }),
)

// DecodeStateEnvelope reads a stored state value, one JSON value and
// nothing after it, into what json.Unmarshal makes of it, without
// reflection: an agent reads one for each command whose value its copy
// does not hold. It returns an error wrapping [ErrSyntax] or [ErrType]
// where json.Unmarshal returns one.
func DecodeStateEnvelope(data []byte) (StateEnvelope, error) {
	e, err := envelopeCodec.decodeAll(data)
	if err != nil {
		return StateEnvelope{}, fmt.Errorf("decode state value: %w", err)
	}
	return e, nil
}

// AppendStateEnvelope appends e's JSON encoding, the bytes json.Marshal(e)
// returns, to dst, without reflection. It returns an error when the value
// or an output is not valid JSON.
func AppendStateEnvelope(dst []byte, e *StateEnvelope) ([]byte, error) {
	dst, err := envelopeCodec.append(dst, e)
	if err != nil {
		return dst, fmt.Errorf("encode state value: %w", err)
	}
	return dst, nil
}

// Uint reads an unsigned integer into *v. A null leaves *v unchanged; a
// number that is negative, not an integer, or out of range is a type
// error, as in encoding/json.
func (d *Decoder) Uint(v *uint64) error {
	raw, ok, err := d.scalar()
	if !ok {
		return err
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return d.fail(fmt.Errorf("%s for an unsigned integer: %w", kind(c), ErrType))
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil {
		return d.fail(fmt.Errorf("number %s for an unsigned integer: %w", raw, ErrType))
	}
	*v = n
	return nil
}

func unsigned[T any](goName string, p func(*T) *uint64) binding[T] {
	return binding[T]{goName: goName,
		enc:   func(dst []byte, v *T) ([]byte, error) { return strconv.AppendUint(dst, *p(v), 10), nil },
		dec:   func(d *Decoder, v *T) error { return d.Uint(p(v)) },
		empty: func(v *T) bool { return *p(v) == 0 },
	}
}

// contextMap binds a map of contexts, such as a state value's outputs.
func contextMap[T any](goName string, p func(*T) *map[string]messages.Context) binding[T] {
	return binding[T]{goName: goName,
		enc:   func(dst []byte, v *T) ([]byte, error) { return appendContextMap(dst, *p(v)) },
		dec:   func(d *Decoder, v *T) error { return decodeContextMap(d, p(v)) },
		empty: func(v *T) bool { return len(*p(v)) == 0 },
	}
}

// appendContextMap appends m as encoding/json encodes a
// map[string]messages.Context: null when nil, keys sorted.
func appendContextMap(dst []byte, m map[string]messages.Context) ([]byte, error) {
	return appendMap(dst, m, func(dst []byte, c messages.Context) ([]byte, error) { return AppendRawMap(dst, c) })
}

// decodeContextMap reads a map of contexts as encoding/json decodes a
// map[string]messages.Context: null sets *m to nil, an object adds its
// members to *m (made when nil).
func decodeContextMap(d *Decoder, m *map[string]messages.Context) error {
	if d.Null() {
		*m = nil
		return nil
	}
	if d.err == nil && d.peek() == '{' && *m == nil {
		*m = map[string]messages.Context{}
	}
	return d.Object(func(key []byte) error {
		var c messages.Context
		if err := RawMap(d, &c); err != nil {
			return err
		}
		(*m)[string(key)] = c
		return nil
	})
}
