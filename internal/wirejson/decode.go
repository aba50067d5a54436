package wirejson

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

// ErrSyntax is wrapped by every error about input that is not valid JSON.
var ErrSyntax = errors.New("invalid JSON")

// ErrType is wrapped by every error about a valid JSON value of the wrong
// type for its field.
var ErrType = errors.New("wrong JSON type")

// Decoder reads one JSON value from a byte slice, as encoding/json would
// decode it into a struct. Its methods read the value at the current
// position and move past it. The first error sticks: later calls return it.
type Decoder struct {
	data []byte
	pos  int
	err  error
}

// NewDecoder returns a decoder reading data.
func NewDecoder(data []byte) *Decoder { return &Decoder{data: data} }

func (d *Decoder) fail(err error) error {
	if d.err == nil {
		d.err = err
	}
	return d.err
}

func (d *Decoder) syntax(what string) error {
	return d.fail(fmt.Errorf("%s at offset %d: %w", what, d.pos, ErrSyntax))
}

func (d *Decoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, 0 at the end.
func (d *Decoder) peek() byte {
	d.skipSpace()
	if d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

// Null consumes a null and reports true when the next value is null.
func (d *Decoder) Null() bool {
	if d.err != nil || d.peek() != 'n' {
		return false
	}
	if !bytes.HasPrefix(d.data[d.pos:], []byte("null")) {
		d.syntax("invalid literal")
		return false
	}
	d.pos += 4
	return true
}

// Object reads an object, calling field with each member's key (unescaped)
// positioned on its value, which field must read. A null reads as no
// members, as encoding/json leaves a struct unchanged for null. It returns
// an error for anything else, or the first error field returns.
func (d *Decoder) Object(field func(key []byte) error) error {
	var keyBuf [64]byte
	return d.composite('{', '}', "object", func() error {
		if d.peek() != '"' {
			return d.syntax("expected a string key")
		}
		key, err := d.str(keyBuf[:0])
		if err != nil {
			return err
		}
		if d.peek() != ':' {
			return d.syntax("expected ':'")
		}
		d.pos++
		return field(key)
	})
}

// String reads a string into *s. A null leaves *s unchanged.
func (d *Decoder) String(s *string) error { return d.StringOf(s) }

// StringOf reads a string and stores in *s the one of known it equals,
// without allocating, or a copy when it equals none. A null leaves *s
// unchanged.
func (d *Decoder) StringOf(s *string, known ...string) error {
	if d.Null() || d.err != nil {
		return d.err
	}
	c := d.peek()
	if c != '"' {
		if _, err := d.skip(); err != nil {
			return err
		}
		return d.fail(fmt.Errorf("%s for a string: %w", kind(c), ErrType))
	}
	var buf [64]byte
	b, err := d.str(buf[:0])
	if err != nil {
		return err
	}
	for _, k := range known {
		if string(b) == k {
			*s = k
			return nil
		}
	}
	*s = string(b)
	return nil
}

// scalar consumes the next value and returns its bytes; ok is false, and
// nothing is consumed, for a null or after an earlier error.
func (d *Decoder) scalar() (raw []byte, ok bool, err error) {
	if d.Null() || d.err != nil {
		return nil, false, d.err
	}
	d.skipSpace()
	start := d.pos
	if _, err := d.skip(); err != nil {
		return nil, false, err
	}
	return d.data[start:d.pos], true, nil
}

// Int reads an integer into *v. A null leaves *v unchanged; a number that is
// not an integer, or out of range, is a type error, as in encoding/json.
func (d *Decoder) Int(v *int64) error {
	raw, ok, err := d.scalar()
	if !ok {
		return err
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return d.fail(fmt.Errorf("%s for an integer: %w", kind(c), ErrType))
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return d.fail(fmt.Errorf("number %s for an integer: %w", raw, ErrType))
	}
	*v = n
	return nil
}

// Bool reads a boolean into *v. A null leaves *v unchanged; anything else
// is a type error, as in encoding/json.
func (d *Decoder) Bool(v *bool) error {
	raw, ok, err := d.scalar()
	if !ok {
		return err
	}
	switch string(raw) {
	case "true":
		*v = true
	case "false":
		*v = false
	default:
		return d.fail(fmt.Errorf("%s for a boolean: %w", kind(raw[0]), ErrType))
	}
	return nil
}

// IntOf is Int for an int field.
func (d *Decoder) IntOf(v *int) error {
	n := int64(*v)
	if err := d.Int(&n); err != nil {
		return err
	}
	*v = int(n)
	return nil
}

// RawMap reads an object of raw JSON values at d's position, as
// encoding/json decodes a map[string]json.RawMessage: null sets *m to nil,
// an object adds its members to *m (made when nil), each value's bytes as
// they are in the input. The values share one new buffer, not the input.
func RawMap[M ~map[string]V, V ~[]byte](d *Decoder, m *M) error {
	if d.Null() {
		*m = nil
		return nil
	}
	if d.err != nil {
		return d.err
	}
	if c := d.peek(); c != '{' {
		if c == 0 {
			return d.syntax("unexpected end")
		}
		if _, err := d.skip(); err != nil {
			return err
		}
		return d.fail(fmt.Errorf("%s for an object: %w", kind(c), ErrType))
	}
	// Validate it all first, which also sizes the buffer.
	start := d.pos
	if _, err := d.skip(); err != nil {
		return err
	}
	buf := make([]byte, 0, d.pos-start)
	d.pos = start
	if *m == nil {
		*m = make(M, 4)
	}
	return d.Object(func(key []byte) error {
		d.skipSpace()
		from := d.pos
		if _, err := d.skip(); err != nil {
			return err
		}
		at := len(buf)
		buf = append(buf, d.data[from:d.pos]...)
		(*m)[string(key)] = V(buf[at:len(buf):len(buf)])
		return nil
	})
}

// Skip reads and validates any value.
func (d *Decoder) Skip() error {
	_, err := d.skip()
	return err
}

// End returns an error unless only whitespace is left.
func (d *Decoder) End() error {
	if d.err != nil {
		return d.err
	}
	if d.skipSpace(); d.pos < len(d.data) {
		return d.syntax("data after the value")
	}
	return nil
}

// skip moves past the value at the current position and returns its first
// byte's offset.
func (d *Decoder) skip() (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	d.skipSpace()
	start := d.pos
	end, err := skipValue(d.data, d.pos, 0)
	if err != nil {
		d.pos = end
		return 0, d.fail(err)
	}
	d.pos = end
	return start, nil
}

// str reads the string at the current position (which starts with a
// quote), unescaped into buf, as encoding/json unquotes it.
func (d *Decoder) str(buf []byte) ([]byte, error) {
	data := d.data
	i := d.pos + 1
	start := i
	for i < len(data) {
		for i < len(data) && literal[data[i]] {
			i++
		}
		if i == len(data) {
			break
		}
		c := data[i]
		switch {
		case c == '"':
			d.pos = i + 1
			return append(buf, data[start:i]...), nil
		case c == '\\':
			buf = append(buf, data[start:i]...)
			n, out, ok := unescape(data[i:], buf)
			if !ok {
				d.pos = i
				return nil, d.syntax("invalid escape")
			}
			buf = out
			i += n
			start = i
		case c < 0x20:
			d.pos = i
			return nil, d.syntax("control character in a string")
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				buf = append(buf, data[start:i]...)
				buf = utf8.AppendRune(buf, utf8.RuneError)
				i++
				start = i
				continue
			}
			i += size
		}
	}
	d.pos = len(data)
	return nil, d.syntax("unterminated string")
}

// literal holds, for every byte, whether it is an ASCII byte that a JSON
// string holds as it is: not a quote, a backslash or a control character.
// The string readers skip a run of such bytes with one table look-up a
// byte (BenchmarkCommandCodec: decoding a command took 6 % less).
var literal = func() (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// unescape decodes the escape at the start of s into buf and returns its
// length in s.
func unescape(s, buf []byte) (int, []byte, bool) {
	if len(s) < 2 {
		return 0, buf, false
	}
	switch s[1] {
	case '"', '\\', '/':
		return 2, append(buf, s[1]), true
	case 'b':
		return 2, append(buf, '\b'), true
	case 'f':
		return 2, append(buf, '\f'), true
	case 'n':
		return 2, append(buf, '\n'), true
	case 'r':
		return 2, append(buf, '\r'), true
	case 't':
		return 2, append(buf, '\t'), true
	case 'u':
		r, ok := hex4(s[2:])
		if !ok {
			return 0, buf, false
		}
		n := 6
		if utf16.IsSurrogate(r) {
			r2, ok2 := rune(-1), false
			if len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
				r2, ok2 = hex4(s[8:])
			}
			if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
				r = dec
				n = 12
			} else {
				r = utf8.RuneError
			}
		}
		return n, utf8.AppendRune(buf, r), true
	}
	return 0, buf, false
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}

// skipValue validates the JSON value starting at data[i] (after optional
// whitespace) and returns the offset just past it.
func skipValue(data []byte, i, depth int) (int, error) {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	if i >= len(data) {
		return i, fmt.Errorf("unexpected end: %w", ErrSyntax)
	}
	switch c := data[i]; {
	case c == '"':
		return skipString(data, i)
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return i, fmt.Errorf("nested too deeply: %w", ErrSyntax)
		}
		return skipComposite(data, i, depth+1)
	case c == '-' || ('0' <= c && c <= '9'):
		return skipNumber(data, i)
	case c == 't':
		return skipLiteral(data, i, "true")
	case c == 'f':
		return skipLiteral(data, i, "false")
	case c == 'n':
		return skipLiteral(data, i, "null")
	default:
		return i, fmt.Errorf("invalid character %q at offset %d: %w", c, i, ErrSyntax)
	}
}

func skipLiteral(data []byte, i int, lit string) (int, error) {
	if !bytes.HasPrefix(data[i:], []byte(lit)) {
		return i, fmt.Errorf("invalid literal at offset %d: %w", i, ErrSyntax)
	}
	return i + len(lit), nil
}

func skipString(data []byte, i int) (int, error) {
	for i++; i < len(data); i++ {
		for i < len(data) && literal[data[i]] {
			i++
		}
		if i == len(data) {
			break
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 >= len(data) {
				return i, fmt.Errorf("unterminated string: %w", ErrSyntax)
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if _, ok := hex4(data[i+2:]); !ok {
					return i, fmt.Errorf("invalid \\u escape at offset %d: %w", i, ErrSyntax)
				}
				i += 5
			default:
				return i, fmt.Errorf("invalid escape at offset %d: %w", i, ErrSyntax)
			}
		case c < 0x20:
			return i, fmt.Errorf("control character in a string at offset %d: %w", i, ErrSyntax)
		}
	}
	return i, fmt.Errorf("unterminated string: %w", ErrSyntax)
}

func skipNumber(data []byte, i int) (int, error) {
	start := i
	if data[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case digits() == 0:
		return i, fmt.Errorf("invalid number at offset %d: %w", start, ErrSyntax)
	}
	if i < len(data) && data[i] == '.' {
		i++
		if digits() == 0 {
			return i, fmt.Errorf("invalid number at offset %d: %w", start, ErrSyntax)
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if digits() == 0 {
			return i, fmt.Errorf("invalid number at offset %d: %w", start, ErrSyntax)
		}
	}
	return i, nil
}

func skipComposite(data []byte, i, depth int) (int, error) {
	open := data[i]
	closing := byte('}')
	if open == '[' {
		closing = ']'
	}
	i++
	first := true
	for {
		for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
			i++
		}
		if i >= len(data) {
			return i, fmt.Errorf("unexpected end: %w", ErrSyntax)
		}
		if first && data[i] == closing {
			return i + 1, nil
		}
		if !first {
			switch data[i] {
			case closing:
				return i + 1, nil
			case ',':
				i++
			default:
				return i, fmt.Errorf("expected ',' or %q at offset %d: %w", closing, i, ErrSyntax)
			}
		}
		first = false
		var err error
		if open == '{' {
			for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
				i++
			}
			if i >= len(data) || data[i] != '"' {
				return i, fmt.Errorf("expected a string key at offset %d: %w", i, ErrSyntax)
			}
			if i, err = skipString(data, i); err != nil {
				return i, err
			}
			for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
				i++
			}
			if i >= len(data) || data[i] != ':' {
				return i, fmt.Errorf("expected ':' at offset %d: %w", i, ErrSyntax)
			}
			i++
		}
		if i, err = skipValue(data, i, depth); err != nil {
			return i, err
		}
	}
}

// kind names the JSON type that starts with c, for errors.
func kind(c byte) string {
	switch {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "bool"
	case c == 'n':
		return "null"
	default:
		return "number"
	}
}

// composite reads an object or an array (what) between the bytes open and
// close, calling each positioned on each member, which each must read. A
// null reads as no members. It returns an error for anything else, or the
// first error each returns.
func (d *Decoder) composite(open, close byte, what string, each func() error) error {
	if d.err != nil {
		return d.err
	}
	if d.Null() || d.err != nil {
		return d.err
	}
	switch c := d.peek(); c {
	case open:
	case 0:
		return d.syntax("unexpected end")
	default:
		if _, err := d.skip(); err != nil {
			return err
		}
		return d.fail(fmt.Errorf("%s for an %s: %w", kind(c), what, ErrType))
	}
	d.pos++
	if d.peek() == close {
		d.pos++
		return nil
	}
	for {
		if err := each(); err != nil {
			return d.fail(err)
		}
		if d.err != nil {
			return d.err
		}
		switch d.peek() {
		case ',':
			d.pos++
		case close:
			d.pos++
			return nil
		default:
			return d.syntax("expected ',' or '" + string(close) + "'")
		}
	}
}

// Array reads an array, calling elem positioned on each element, which
// elem must read. A null reads as no elements. It returns an error for
// anything else, or the first error elem returns.
func (d *Decoder) Array(elem func() error) error { return d.composite('[', ']', "array", elem) }

// Raw reads any value and returns its bytes, a slice of the decoder's
// data.
func (d *Decoder) Raw() ([]byte, error) {
	start, err := d.skip()
	if err != nil {
		return nil, err
	}
	return d.data[start:d.pos:d.pos], nil
}
