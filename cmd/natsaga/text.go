package main

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// printf is fmt.Fprintf for the text natsaga prints for people: every
// argument that is text (a string or a type of one, bytes, an error, a
// fmt.Stringer) is printed as escape returns it, for it may come from
// anyone who can publish (a reason, a note, a saga id in an event, a
// service's metadata, a coordinator's error); an error's lines, each
// escaped, stay lines, indented under its first. Other arguments, numbers
// and booleans, are printed as fmt prints them; format, natsaga's own, is
// not escaped. Every line natsaga prints with an argument goes through
// printf, so that no table, line or error on a terminal carries a control
// character it did not write itself. Verbs that quote (%q) quote the
// escaped text: use %s.
func printf(w io.Writer, format string, args ...any) {
	shown := make([]any, len(args))
	for i, a := range args {
		shown[i] = escapeArg(a)
	}
	fmt.Fprintf(w, format, shown...)
}

// escapeArg returns a, when it is text, as escape returns it; otherwise a.
func escapeArg(a any) any {
	switch v := a.(type) {
	case nil:
		return a
	case error:
		// The lines of an error that joins several (errors.Join: a
		// definitions file's problems) stay lines, indented under the
		// first, so that none passes for a line of natsaga's own.
		lines := strings.Split(v.Error(), "\n")
		for i, l := range lines {
			lines[i] = escape(l)
		}
		return strings.Join(lines, "\n  ")
	case fmt.Stringer:
		return escape(v.String())
	}
	switch rv := reflect.ValueOf(a); {
	case rv.Kind() == reflect.String:
		return escape(rv.String())
	case rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8: // json.RawMessage too
		return escape(string(rv.Bytes()))
	}
	return a
}

// escape returns s with every character that %q would escape written as
// %q writes it, without the quotes: the C0 controls (tab and newline
// included) as \t, \n, \r, \a, \x1b..., DEL as \x7f, the C1 controls,
// Unicode's format characters (the bidirectional overrides and isolates
// among them) and its separators other than the space as \u0085,
// \u202e..., and a byte that is not UTF-8 as \x9b. Those are what a
// terminal would act on (clear the screen, move the cursor, start a line,
// reorder the text) rather than show, or what would shift a table's
// columns. Every other character, the backslash included, stays as it is.
func escape(s string) string {
	i := 0
	for i < len(s) && s[i] >= 0x20 && s[i] < utf8.RuneSelf && s[i] != 0x7f {
		i++
	}
	if i == len(s) {
		return s // printable ASCII: the usual case
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case !strconv.IsPrint(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
