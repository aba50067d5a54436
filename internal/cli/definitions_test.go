package cli_test

import (
	"os"
	"path/filepath"
	"strings"
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
