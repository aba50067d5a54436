package wirejson

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
)

// Each wire field is declared once, by the json tag of its struct field in
// package messages or saga. A codec binds every tagged field of a type to
// the functions that encode and decode its Go type, and takes the field's
// name, its place and its omitempty or omitzero from the tag, as
// encoding/json does. newCodec panics when a tagged field has no binding,
// or a binding no tagged field, so a field added to a type and not here
// fails every test.

// codec encodes and decodes the tagged fields of T.
type codec[T any] struct {
	fields []wireField[T]
	// scratch holds decoders and values to decode into. The fields'
	// functions are called through func values, so the compiler cannot
	// keep what they are given on the stack; reusing it saves two
	// allocations per message decoded.
	scratch sync.Pool
}

// scratch is a decoder and a value to decode into.
type scratch[T any] struct {
	d Decoder
	v T
}

// decodeAll reads data, one JSON object and nothing after it, as
// json.Unmarshal does, and returns the value read; on error the value may
// be partly filled.
func (c *codec[T]) decodeAll(data []byte) (T, error) {
	s, ok := c.scratch.Get().(*scratch[T])
	if !ok {
		s = new(scratch[T])
	}
	var zero T
	s.d, s.v = Decoder{data: data}, zero
	err := c.decode(&s.d, &s.v)
	if err == nil {
		err = s.d.End()
	}
	v := s.v
	s.d, s.v = Decoder{}, zero // hold on to nothing of data or v
	c.scratch.Put(s)
	return v, err
}

// wireField is one field of T on the wire.
type wireField[T any] struct {
	name string
	// first and next are the key as written first in the object and after
	// another field: `"name":` and `,"name":`.
	first, next []byte
	omit        func(*T) bool // nil unless the tag says omitempty or omitzero
	enc         func(dst []byte, v *T) ([]byte, error)
	dec         func(d *Decoder, v *T) error // nil for a field only encoded
}

// binding says how to encode and decode the Go field named goName.
type binding[T any] struct {
	goName string
	enc    func(dst []byte, v *T) ([]byte, error)
	dec    func(d *Decoder, v *T) error
	// empty reports whether the field is empty for omitempty, or zero for
	// omitzero.
	empty func(v *T) bool
}

// newCodec returns the codec of T's tagged fields, in the order T declares
// them, each bound by the binding of its Go name.
func newCodec[T any](bs ...binding[T]) *codec[T] {
	byName := map[string]binding[T]{}
	for _, b := range bs {
		byName[b.goName] = b
	}
	c := &codec[T]{}
	t := reflect.TypeFor[T]()
	for i := range t.NumField() {
		f := t.Field(i)
		tag, ok := f.Tag.Lookup("json")
		if !ok || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		b, ok := byName[f.Name]
		if !ok {
			panic(fmt.Sprintf("wirejson: %s.%s has no binding", t.Name(), f.Name))
		}
		delete(byName, f.Name)
		w := wireField[T]{name: name, first: []byte(`"` + name + `":`), next: []byte(`,"` + name + `":`), enc: b.enc, dec: b.dec}
		if strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero") {
			w.omit = b.empty
		}
		c.fields = append(c.fields, w)
	}
	for name := range byName {
		panic(fmt.Sprintf("wirejson: binding %s names no tagged field of %s", name, t.Name()))
	}
	return c
}

// append appends v as a JSON object.
func (c *codec[T]) append(dst []byte, v *T) ([]byte, error) {
	dst = append(dst, '{')
	first := true
	for i := range c.fields {
		f := &c.fields[i]
		if f.omit != nil && f.omit(v) {
			continue
		}
		if first {
			dst = append(dst, f.first...)
			first = false
		} else {
			dst = append(dst, f.next...)
		}
		var err error
		if dst, err = f.enc(dst, v); err != nil {
			return dst, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return append(dst, '}'), nil
}

// decode reads a JSON object from d into v, as json.Unmarshal does: a key
// matches its field exactly, or else ignoring case; unknown keys are
// skipped; the last of duplicate keys wins.
func (c *codec[T]) decode(d *Decoder, v *T) error {
	return d.Object(func(key []byte) error {
		if f := c.field(key); f != nil && f.dec != nil {
			return f.dec(d, v)
		}
		return d.Skip()
	})
}

func (c *codec[T]) field(key []byte) *wireField[T] {
	for i := range c.fields {
		if string(key) == c.fields[i].name {
			return &c.fields[i]
		}
	}
	for i := range c.fields {
		if bytes.EqualFold(key, []byte(c.fields[i].name)) {
			return &c.fields[i]
		}
	}
	return nil
}

// The bindings, one per Go type on the wire.

// str binds a string field.
func str[T any](goName string, p func(*T) *string) binding[T] {
	return binding[T]{goName: goName,
		enc:   func(dst []byte, v *T) ([]byte, error) { return AppendString(dst, *p(v)), nil },
		dec:   func(d *Decoder, v *T) error { return d.String(p(v)) },
		empty: func(v *T) bool { return *p(v) == "" },
	}
}

// named binds a field of a string type; known lists the values the decoder
// shares rather than allocates.
func named[T any, S ~string](goName string, p func(*T) *S, known ...string) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) { return AppendString(dst, string(*p(v))), nil },
		dec: func(d *Decoder, v *T) error {
			s := string(*p(v))
			err := d.StringOf(&s, known...)
			*p(v) = S(s)
			return err
		},
		empty: func(v *T) bool { return *p(v) == "" },
	}
}

func integer[T any](goName string, p func(*T) *int) binding[T] {
	return binding[T]{goName: goName,
		enc:   func(dst []byte, v *T) ([]byte, error) { return AppendInt(dst, int64(*p(v))), nil },
		dec:   func(d *Decoder, v *T) error { return d.IntOf(p(v)) },
		empty: func(v *T) bool { return *p(v) == 0 },
	}
}

func integer64[T any](goName string, p func(*T) *int64) binding[T] {
	return binding[T]{goName: goName,
		enc:   func(dst []byte, v *T) ([]byte, error) { return AppendInt(dst, *p(v)), nil },
		dec:   func(d *Decoder, v *T) error { return d.Int(p(v)) },
		empty: func(v *T) bool { return *p(v) == 0 },
	}
}

func boolean[T any](goName string, p func(*T) *bool) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) {
			if *p(v) {
				return append(dst, "true"...), nil
			}
			return append(dst, "false"...), nil
		},
		dec:   func(d *Decoder, v *T) error { return d.Bool(p(v)) },
		empty: func(v *T) bool { return !*p(v) },
	}
}

// rawMap binds a map of raw JSON values, such as a saga context.
func rawMap[T any, M ~map[string]V, V ~[]byte](goName string, p func(*T) *M) binding[T] {
	return binding[T]{goName: goName,
		enc:   func(dst []byte, v *T) ([]byte, error) { return AppendRawMap(dst, *p(v)) },
		dec:   func(d *Decoder, v *T) error { return RawMap(d, p(v)) },
		empty: func(v *T) bool { return len(*p(v)) == 0 },
	}
}

// instant binds a time, written as time.Time.MarshalJSON writes it.
func instant[T any](goName string, p func(*T) *time.Time) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) {
			b, err := p(v).MarshalJSON()
			return append(dst, b...), err
		},
		dec: func(d *Decoder, v *T) error {
			if d.Null() || d.err != nil {
				return d.err // null leaves the time as it is
			}
			var s string
			if err := d.String(&s); err != nil {
				return err
			}
			return p(v).UnmarshalText([]byte(s))
		},
		empty: func(v *T) bool { return p(v).IsZero() },
	}
}

// stringList binds a list of strings, written null when nil.
func stringList[T any](goName string, p func(*T) *[]string) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) {
			return appendList(dst, *p(v), func(dst []byte, s *string) ([]byte, error) { return AppendString(dst, *s), nil })
		},
		dec: func(d *Decoder, v *T) error {
			return list(d, p(v), func(s *string) error { return d.String(s) })
		},
		empty: func(v *T) bool { return len(*p(v)) == 0 },
	}
}

// list reads an array into *xs, each element with elem, as encoding/json
// decodes a slice: null sets *xs to nil, an array to a new slice of its
// elements (empty, not nil, for []).
func list[E any](d *Decoder, xs *[]E, elem func(*E) error) error {
	if d.Null() {
		*xs = nil
		return nil
	}
	got := []E{}
	err := d.Array(func() error {
		var e E
		err := elem(&e)
		got = append(got, e)
		return err
	})
	if err == nil {
		*xs = got
	}
	return err
}

// appendList appends xs as encoding/json encodes a slice: null when nil,
// each element with elem.
func appendList[E any](dst []byte, xs []E, elem func(dst []byte, e *E) ([]byte, error)) ([]byte, error) {
	if xs == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, '[')
	for i := range xs {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = elem(dst, &xs[i]); err != nil {
			return dst, err
		}
	}
	return append(dst, ']'), nil
}

// object binds a pointer to a struct that has a codec of its own, written
// null when nil.
func object[T, F any](goName string, c func() *codec[F], p func(*T) **F) binding[T] {
	return binding[T]{goName: goName,
		enc: func(dst []byte, v *T) ([]byte, error) {
			if *p(v) == nil {
				return append(dst, "null"...), nil
			}
			return c().append(dst, *p(v))
		},
		dec: func(d *Decoder, v *T) error {
			if d.Null() {
				*p(v) = nil
				return nil
			}
			if *p(v) == nil {
				*p(v) = new(F)
			}
			return c().decode(d, *p(v))
		},
		empty: func(v *T) bool { return *p(v) == nil },
	}
}
