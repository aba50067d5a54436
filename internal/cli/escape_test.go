package cli_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/cli"
)

// TestEscape: what a terminal would act on is written as %q writes it,
// without the quotes; the rest, backslashes included, stays.
func TestEscape(t *testing.T) {
	for in, want := range map[string]string{
		"":                                 "",
		"step pay failed: no money":        "step pay failed: no money",
		`a\b "c"`:                          `a\b "c"`,
		"héllo, 世界 ✓":                      "héllo, 世界 ✓",
		"\x1b[2J\x1b[31mEVIL\r\nline2\a":   `\x1b[2J\x1b[31mEVIL\r\nline2\a`,
		"a\tb\x00c\x7fd":                   `a\tb\x00c\x7fd`,
		"\u009b31m\u0085":                  `\u009b31m\u0085`,                  // C1: CSI, NEL
		"abc\u202edcba\u2066x\u2069\u200f": `abc\u202edcba\u2066x\u2069\u200f`, // bidi
		"l1\u2028l2":                       `l1\u2028l2`,
		"bad \x9b\xff byte":                `bad \x9b\xff byte`,
	} {
		require.Equal(t, want, cli.Escape(in), "%q", in)
	}
}
