package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/saga"
)

// TestDefinitionsFileTooLarge: a file over the limit is refused with its
// own size, though only the limit's worth of it is read.
func TestDefinitionsFileTooLarge(t *testing.T) {
	file := filepath.Join(t.TempDir(), "huge.json")
	require.NoError(t, os.WriteFile(file, []byte(strings.Repeat(" ", 20_000_124)), 0o600))
	_, _, err := cli.ReadDefinitions(file)
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
	require.EqualError(t, err, file+": definitions file: 20000124 bytes, over the limit of 196608: invalid saga definition")
}

// TestDefinitionsFileNotRegular: a pipe (whose opening would wait for a
// writer), a directory or a device is refused at once.
func TestDefinitionsFileNotRegular(t *testing.T) {
	pipe := filepath.Join(t.TempDir(), "pipe")
	require.NoError(t, syscall.Mkfifo(pipe, 0o600))
	for _, file := range []string{pipe, t.TempDir(), os.DevNull} {
		_, _, err := cli.ReadDefinitions(file)
		require.ErrorIs(t, err, saga.ErrInvalidDefinition, file)
		require.EqualError(t, err, file+": not a regular file: invalid saga definition")
	}
}
