package messages

import (
	"encoding/json"
	"fmt"
)

// Context is a saga's shared data: a JSON object whose values are kept as raw
// JSON, so that integers such as amounts in cents survive any number of hops
// exactly. Every step's command carries the whole context, and a step's
// output is merged into it.
//
// A Context is a map: it is not safe for concurrent mutation.
type Context map[string]json.RawMessage

// Set stores v, encoded as JSON, under key. It returns an error only when v
// cannot be encoded.
func (c Context) Set(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("context key %q: %w", key, err)
	}
	c[key] = b
	return nil
}

// MustSet is Set for values that always encode (integers, strings, bools).
// It returns c so calls can be chained when building a context.
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
