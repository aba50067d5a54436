package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/saga"
)

func TestDefinitionsFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	require.NoError(t, os.WriteFile(good, flood.SagasFile, 0o600))
	c, err := parseFlags([]string{"-definitions", good}, func(string) string { return "" }, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, good, c.defsFile)
	require.Equal(t, flood.Definitions(), c.defs, "read as the flags are parsed")

	defs, err := definitions("")
	require.NoError(t, err)
	require.Equal(t, flood.Definitions(), defs, "no file: the flood sagas")

	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"roles":["r"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"q"}]}]}`), 0o600))
	_, err = definitions(bad)
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
	require.ErrorIs(t, err, cli.ErrBadFlag, "the program exits 2")
	require.EqualError(t, err, "-definitions "+bad+`: definition "s": field steps[0].role: unknown role "q": not in the file's roles [r]`)

	_, err = definitions(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorIs(t, err, cli.ErrBadFlag)
}

// TestNoDefinitions runs the coordinator program with -definitions none: it
// refuses a start of a saga no one registered, runs one registered at run
// time, and, started again with none, runs it still from the bucket.
func TestNoDefinitions(t *testing.T) {
	defs, err := definitions(noDefinitions)
	require.NoError(t, err)
	require.Empty(t, defs)

	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	clerk := newClerk(t, nc)
	c, err := client.New(nc, client.Options{})
	require.NoError(t, err)
	ctx := context.Background()

	stop := program(t, url, noDefinitions)
	_, err = c.Start(ctx, client.Start{Saga: "job"})
	require.EqualError(t, err, `start job saga: natsaga.start.job: not_found: start "job" (no saga type is defined): unknown saga definition`)

	registered, err := c.Register(ctx, []byte(jobV1))
	require.NoError(t, err)
	require.Len(t, registered, 1)
	first := testenv.Start(t, nc, "job", nil)
	for _, step := range []string{"open", "file", "archive"} {
		clerk.ok(t, clerk.next(t, first, step))
	}
	testenv.WaitStatus(t, nc, first, saga.Completed)
	require.NoError(t, stop())

	program(t, url, noDefinitions)
	again := testenv.Start(t, nc, "job", nil)
	for _, step := range []string{"open", "file", "archive"} {
		clerk.ok(t, clerk.next(t, again, step))
	}
	require.Equal(t, int64(1), testenv.WaitStatus(t, nc, again, saga.Completed).Version)
}
