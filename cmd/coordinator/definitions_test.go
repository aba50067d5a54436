package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/saga"
)

func TestDefinitionsFlag(t *testing.T) {
	c, err := parseFlags([]string{"-definitions", "sagas.json"}, func(string) string { return "" }, os.Stderr)
	require.NoError(t, err)
	require.Equal(t, "sagas.json", c.defsFile)

	defs, err := definitions("")
	require.NoError(t, err)
	require.Equal(t, flood.Definitions(), defs, "no file: the flood sagas")

	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	require.NoError(t, os.WriteFile(good, flood.SagasFile, 0o600))
	defs, err = definitions(good)
	require.NoError(t, err)
	require.Equal(t, flood.Definitions(), defs)

	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"roles":["r"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"q"}]}]}`), 0o600))
	_, err = definitions(bad)
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
	require.EqualError(t, err, bad+`: definition "s": field steps[0].role: unknown role "q": not in the file's roles [r]`)

	_, err = definitions(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}
