package messages

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// Context is a saga's shared data: a JSON object whose values are kept as raw
// JSON, so that integers such as amounts in cents survive any number of hops
// exactly. Every step's command carries the whole context, and a step's
// output is merged into it.
//
// A Context is a map: it is not safe for concurrent mutation.
type Context map[string]json.RawMessage

// Set stores v, encoded as JSON, under key. It returns an error when v
// cannot be encoded, and one wrapping [ErrNilContext] when c is nil (a
// handler's `var out messages.Context`), which has no map to hold it.
func (c Context) Set(key string, v any) error {
	if c == nil {
		return fmt.Errorf("context key %q: %w", key, ErrNilContext)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("context key %q: %w", key, err)
	}
	c[key] = b
	return nil
}

// MustSet is Set for values that always encode (integers, strings, bools),
// on a Context made (messages.Context{}): it panics with Set's error. It
// returns c so calls can be chained when building a context.
func (c Context) MustSet(key string, v any) Context {
	if err := c.Set(key, v); err != nil {
		panic(err)
	}
	return c
}

// Get decodes the value under key into v. It returns [ErrMissingKey] when the
// key is absent, and a decoding error when the value has the wrong type.
func (c Context) Get(key string, v any) error {
	raw, ok := c[key]
	if !ok {
		return fmt.Errorf("context key %q: %w", key, ErrMissingKey)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("context key %q: %w", key, err)
	}
	return nil
}

// Int64 returns the integer under key. It returns an error when the key is
// missing or does not hold an integer.
func (c Context) Int64(key string) (int64, error) {
	var v int64
	err := c.Get(key, &v)
	return v, err
}

// String returns the string under key. It returns an error when the key is
// missing or does not hold a string.
func (c Context) String(key string) (string, error) {
	var v string
	err := c.Get(key, &v)
	return v, err
}

// Merge copies every key of other into c, overwriting keys present in both.
// Like any map, a nil c takes nothing: Merge panics when c is nil and other
// is not empty (a handler's panic is answered as an error).
func (c Context) Merge(other Context) {
	for k, v := range other {
		c[k] = v
	}
}

// Clone returns a copy of c that shares no map with it. Values are raw JSON
// and are never mutated in place, so they are shared.
func (c Context) Clone() Context {
	out := make(Context, len(c))
	for k, v := range c {
		out[k] = v
	}
	return out
}

// MaxContext is the most bytes a saga's context may take, as JSON. Every
// command carries its saga's context, and an agent drops a command over
// [MaxPayload]: the rest of a command (its ids, names and numbers, and a
// batch's envelope) takes less than the 1 KiB left.
const MaxContext = MaxPayload - 1<<10

// MaxOutputFor is the most bytes, as JSON, of an execute's output that
// an agent records under a server whose payload limit is maxPayload (0
// when it is 8 KiB or less): the coordinator drops an answer over an
// eighth of the limit, and the record of a compensated step holds the
// output beside the rest of the execute's result and the compensation's
// (a few hundred bytes: a recorded compensation has no output, and a
// reason only when it found nothing to undo), so 1 KiB of the eighth is
// left for them. Above 1 MiB it is that of 1 MiB: a role's record log
// carries many records a message, at most 256 KiB.
func MaxOutputFor(maxPayload int64) int {
	return max(int(min(maxPayload, 1<<20)/8)-1<<10, 0)
}

// MaxValueFor is the most bytes, as JSON, of a state value that an agent
// stores under a server whose payload limit is maxPayload: half of it,
// the other half left for the value's envelope, which names the outputs
// of the actions that wrote it.
func MaxValueFor(maxPayload int64) int { return int(maxPayload / 2) }

// MaxContextDepth is the deepest a saga's context may nest arrays and
// objects, the context object itself counted: a value of the context nests
// at most MaxContextDepth-1 levels. Every payload that carries a context
// (a command, a batch, a status or list answer, the saga log) wraps it in a
// few more levels, and every JSON decoder natsaga or an agent uses (Go's
// encoding/json among them) stops at 10,000: a context nested near that
// would be accepted, then fail to be written or read back (a saga log
// message that no recovery can read, answers that are never sent).
const MaxContextDepth = 1000

// Depth returns how deep c nests arrays and objects, the context object
// itself counted as 1. Its values must be valid JSON, as every decoder of
// natsaga makes them.
func (c Context) Depth() int {
	_, depth := c.Measure()
	return depth
}

// RawDepth returns how deep the valid JSON value v nests arrays and objects:
// 0 for a scalar.
func RawDepth(v []byte) int {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t' || v[0] == '\r' || v[0] == '\n') {
		v = v[1:]
	}
	if len(v) == 0 || (v[0] != '[' && v[0] != '{') {
		return 0 // a scalar: nothing to scan
	}
	depth, most, inString := 0, 0, false
	for i := 0; i < len(v); i++ {
		b := v[i]
		if inString {
			switch b {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch b {
		case '"':
			inString = true
		case '[', '{':
			if depth++; depth > most {
				most = depth
			}
		case ']', '}':
			depth--
		}
	}
	return most
}

// EncodedLen returns at least the bytes json.Marshal(c) takes, and exactly
// that when its values hold nothing to compact or escape (no whitespace
// outside strings, no <, >, & or byte 0xE2, which starts U+2028 and
// U+2029). It allocates nothing.
func (c Context) EncodedLen() int {
	n, _ := c.Measure()
	return n
}

// Measure returns c's [Context.EncodedLen] and [Context.Depth] in one
// pass over its keys: the saga engine takes both of every context it
// keeps.
func (c Context) Measure() (encodedLen, depth int) {
	if c == nil {
		return len("null"), 1
	}
	n := len("{}")
	if len(c) > 1 {
		n += len(c) - 1 // commas
	}
	depth = 1
	for k, v := range c {
		n += QuotedLen(k) + 1 + len(v)
		for _, b := range v {
			// encoding/json writes these as \u003c, \u003e, \u0026
			// and \u2028, \u2029: at most 5 more bytes each.
			if b == '<' || b == '>' || b == '&' || b == 0xE2 {
				n += 5
			}
		}
		if v == nil {
			n += len("null")
		}
		if d := 1 + RawDepth(v); d > depth {
			depth = d
		}
	}
	return n, depth
}

// QuotedLen returns at least the bytes s takes as a JSON string written by
// encoding/json, and exactly that when s holds nothing to escape.
func QuotedLen(s string) int {
	n := len(s) + 2
	for i := 0; i < len(s); {
		b := s[i]
		if b >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				n += 5 // \ufffd for one byte
			case r == '\u2028' || r == '\u2029':
				n += 3 // \u2028 for three bytes
			}
			i += size
			continue
		}
		switch {
		case b == '"' || b == '\\' || b == '\b' || b == '\f' || b == '\n' || b == '\r' || b == '\t':
			n++
		case b < 0x20 || b == '<' || b == '>' || b == '&':
			n += 5 // \u00XX
		}
		i++
	}
	return n
}
