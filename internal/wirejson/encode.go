package wirejson

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string, escaped as encoding/json
// escapes it: HTML-safe (<, > and & as \u003c…), control characters,
// U+2028 and U+2029 escaped, and invalid UTF-8 replaced by U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		// Most strings are ids and names: a run of bytes that stand for
		// themselves is skipped with one table look-up a byte.
		for i < len(s) && plain[s[i]] {
			i++
		}
		if i == len(s) {
			break
		}
		if b := s[i]; b < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// htmlSafe reports whether the ASCII byte b stands for itself in a JSON
// string written by encoding/json.
func htmlSafe(b byte) bool {
	return b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
}

// plain holds, for every byte, whether it is an ASCII byte that stands
// for itself in a JSON string written by encoding/json ([htmlSafe]).
var plain = func() (t [256]bool) {
	for b := range utf8.RuneSelf {
		t[b] = htmlSafe(byte(b))
	}
	return t
}()

// AppendInt appends v.
func AppendInt(dst []byte, v int64) []byte { return strconv.AppendInt(dst, v, 10) }

// AppendRaw appends raw, a JSON value, as encoding/json encodes a
// json.RawMessage: nil as null, otherwise compacted with HTML-safe escaping.
// It returns an error, and dst unchanged, when raw is not one valid JSON
// value.
func AppendRaw(dst, raw []byte) ([]byte, error) {
	if raw == nil {
		return append(dst, "null"...), nil
	}
	if clean(raw) {
		if end, err := skipValue(raw, 0, 0); err == nil && end == len(raw) {
			return append(dst, raw...), nil
		}
	}
	// Whitespace to drop, characters to escape or an error to report:
	// leave it to encoding/json.
	b, err := json.Marshal(json.RawMessage(raw))
	if err != nil {
		return dst, err
	}
	return append(dst, b...), nil
}

// clean reports whether raw holds no byte that encoding/json would drop or
// escape when it compacts raw: no whitespace, no <, > or &, and no lead
// byte of U+2028 or U+2029.
func clean(raw []byte) bool {
	for _, b := range raw {
		switch b {
		case ' ', '\t', '\n', '\r', '<', '>', '&', 0xE2:
			return false
		}
	}
	return true
}

// AppendRawMap appends m as encoding/json encodes a
// map[string]json.RawMessage: null when nil, keys sorted. It returns an
// error, and dst unchanged, when a value is not valid JSON.
func AppendRawMap[M ~map[string]V, V ~[]byte](dst []byte, m M) ([]byte, error) {
	return appendMap(dst, m, func(dst []byte, v V) ([]byte, error) { return AppendRaw(dst, v) })
}

// appendMap appends m as encoding/json encodes a map with string keys:
// null when nil, keys sorted, each value with elem. It returns an error
// naming the key, and dst unchanged, when elem fails.
func appendMap[M ~map[string]V, V any](dst []byte, m M, elem func(dst []byte, v V) ([]byte, error)) ([]byte, error) {
	if m == nil {
		return append(dst, "null"...), nil
	}
	orig := len(dst)
	dst = append(dst, '{')
	// The members are gathered in one pass and sorted by key, so that no
	// key is looked up again: a coordinator encodes a saga's context at
	// every store (BenchmarkExecutionEncoding).
	type member struct {
		k string
		v V
	}
	var arr [16]member
	ms := arr[:0]
	for k, v := range m {
		ms = append(ms, member{k, v})
	}
	slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.k, b.k) })
	for i, e := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, e.k)
		dst = append(dst, ':')
		var err error
		if dst, err = elem(dst, e.v); err != nil {
			return dst[:orig], fmt.Errorf("key %q: %w", e.k, err)
		}
	}
	return append(dst, '}'), nil
}
