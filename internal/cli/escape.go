package cli

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Escape returns s with every character that %q would escape written as
// %q writes it, without the quotes: the C0 controls (tab and newline
// included) as \t, \n, \r, \a, \x1b..., DEL as \x7f, the C1 controls,
// Unicode's format characters (the bidirectional overrides and isolates
// among them) and its separators other than the space as \u0085,
// \u202e..., and a byte that is not UTF-8 as \x9b. Those are what a
// terminal would act on (clear the screen, move the cursor, start a line,
// reorder the text) rather than show, or what would shift a table's
// columns. Every other character, the backslash included, stays as it is:
// for text from outside (a saga's reason, a service's name) printed on a
// terminal.
func Escape(s string) string {
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
