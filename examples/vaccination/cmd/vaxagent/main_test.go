package main

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestArguments refuses a missing or unknown role, and lists a role's
// flags, the depot's own among them; -h alone is usage, asked for.
func TestArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{nil, 2, "usage: vaxagent patient|depot|clinic [flags]"},
		{[]string{"-nats", "x"}, 2, "usage: vaxagent"},
		{[]string{"-h"}, 0, "usage: vaxagent patient|depot|clinic [flags]"},
		{[]string{"nurse"}, 2, `vaxagent: unknown vaccination role "nurse" (want patient, depot or clinic)`},
		{[]string{"depot", "-h"}, 0, "-stock doses"},
		{[]string{"depot", "-stock", "-1"}, 2, `invalid value "-1" for flag -stock: negative`},
		{[]string{"clinic", "-stock", "3"}, 2, "flag provided but not defined: -stock"},
	} {
		var stderr bytes.Buffer
		require.Equal(t, tc.code, mainCode(tc.args, func(string) string { return "" }, &stderr), stderr.String())
		require.Contains(t, stderr.String(), tc.says)
	}
}
