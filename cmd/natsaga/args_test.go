package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/messages"
)

// closedURL is a NATS URL where no server listens: a command that dials
// it fails saying "connection refused".
const closedURL = "nats://127.0.0.1:1"

// TestArgumentsBeforeConnecting: every command refuses an argument it
// can check itself before it reaches for the server, exit code 2, with
// the argument's error, as start does: here no server listens, and the
// error is never the connection's.
func TestArgumentsBeforeConnecting(t *testing.T) {
	dir := t.TempDir()
	rule := "breaks the identifier rule (" + messages.TokenRule + "): bad request\n"
	for _, tc := range []struct {
		args []string
		want string // what stderr starts with
	}{
		{[]string{"status", "a.b"}, `natsaga status: saga_id "a.b" ` + rule + "usage: natsaga [flags] status SAGA_ID\n"},
		{[]string{"status", "--", "-x y"}, `natsaga status: saga_id "-x y" ` + rule},
		{[]string{"status", ""}, `natsaga status: saga_id "" ` + rule},
		{[]string{"retry", "G3>"}, `natsaga retry: saga_id "G3>" ` + rule + "usage: natsaga [flags] retry SAGA_ID\n"},
		{[]string{"retry", "a*"}, `natsaga retry: saga_id "a*" ` + rule},
		// What a path holds is said without the usage, as for register.
		{[]string{"outcomes", "-o", "/nonexistent/outcomes.jsonl"}, "natsaga outcomes: -o /nonexistent/outcomes.jsonl: no such file or directory\n"},
		{[]string{"outcomes", "-o", dir}, "natsaga outcomes: -o " + dir + ": is a directory\n"},
		{[]string{"-json", "outcomes", "-ranked", "-o", os.Args[0] + "/x"}, "natsaga outcomes: -o " + os.Args[0] + "/x: not a directory\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := mainCode(append([]string{"-nats", closedURL, "-timeout", "200ms"}, tc.args...), func(string) string { return "" }, &stdout, &stderr)
			require.Equal(t, 2, code, stderr.String())
			require.True(t, strings.HasPrefix(stderr.String(), tc.want), stderr.String())
			require.NotContains(t, stderr.String(), "connect")
			require.Empty(t, stdout.String())
		})
	}
}

// TestOutcomesPathLeftAsFound: checking -o leaves the path as it was: a
// file it had to create is gone, one that was there keeps its content,
// when the log is not written (here no server listens).
func TestOutcomesPathLeftAsFound(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh.jsonl")
	kept := filepath.Join(dir, "kept.jsonl")
	require.NoError(t, os.WriteFile(kept, []byte("before\n"), 0o600))
	for _, path := range []string{fresh, kept} {
		var stdout, stderr bytes.Buffer
		code := mainCode([]string{"-nats", closedURL, "-timeout", "200ms", "outcomes", "-o", path}, func(string) string { return "" }, &stdout, &stderr)
		require.Equal(t, 1, code, stderr.String())
		require.Contains(t, stderr.String(), "connection refused")
	}
	_, err := os.Stat(fresh)
	require.ErrorIs(t, err, os.ErrNotExist)
	got, err := os.ReadFile(kept)
	require.NoError(t, err)
	require.Equal(t, "before\n", string(got))
}

// TestCodeSaidOnce: an error the coordinator answers with, whose message
// ends with its code's words, says the code once, before the message.
func TestCodeSaidOnce(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := ask(func(context.Context, *client.Client) (any, func(w io.Writer), error) {
		return nil, nil, &client.Error{Subject: messages.StatusSubject, Code: messages.CodeBadRequest,
			Message: `saga_id "bad.id" breaks the identifier rule (` + messages.TokenRule + `): bad request`}
	})(context.Background(), nil, &options{}, &stdout, &stderr)
	require.ErrorIs(t, err, errAnswered)
	require.Empty(t, stdout.String())
	require.Equal(t, `natsaga: bad_request: saga_id "bad.id" breaks the identifier rule (`+messages.TokenRule+")\n", stderr.String())
}
