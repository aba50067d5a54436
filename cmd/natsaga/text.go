package main

import (
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/natsaga/natsaga/internal/cli"
)

// printf is fmt.Fprintf for the text natsaga prints for people: every
// argument that is text (a string or a type of one, bytes, an error, a
// fmt.Stringer) is printed as [cli.Escape] returns it, for it may come from
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

// escapeArg returns a, when it is text, as [cli.Escape] returns it; otherwise a.
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
			lines[i] = cli.Escape(l)
		}
		return strings.Join(lines, "\n  ")
	case fmt.Stringer:
		return cli.Escape(v.String())
	}
	switch rv := reflect.ValueOf(a); {
	case rv.Kind() == reflect.String:
		return cli.Escape(rv.String())
	case rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Uint8: // json.RawMessage too
		return cli.Escape(string(rv.Bytes()))
	}
	return a
}
