package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/procs"
)

// TestInstalled installs the programs with `go install ./cmd/...` into a
// temporary GOBIN and runs floodsim from a directory outside any checkout:
// once finding the programs beside itself, and once, copied elsewhere,
// finding them on PATH.
func TestInstalled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every program")
	}
	root, err := procs.ModuleRoot()
	require.NoError(t, err)
	gobin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "go", "install", "./cmd/...")
	install.Dir = root
	install.Env = append(os.Environ(), "GOBIN="+gobin)
	out, err := install.CombinedOutput()
	require.NoError(t, err, "%s", out)

	floodsim := func(bin, path string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, "-households", "8", "-ticks", "3", "-require-all-outcomes=false")
		cmd.Dir = t.TempDir() // no go.mod above it
		cmd.Env = append(os.Environ(), "PATH="+path, "NATS_URL=")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "invariants: ok")
		return string(out)
	}
	floodsim(filepath.Join(gobin, "floodsim"), "/usr/bin:/bin")

	elsewhere := filepath.Join(t.TempDir(), "floodsim")
	data, err := os.ReadFile(filepath.Join(gobin, "floodsim"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(elsewhere, data, 0o755))
	floodsim(elsewhere, gobin+string(os.PathListSeparator)+"/usr/bin:/bin")

	// Neither beside it nor on PATH nor in a checkout: a clear error.
	cmd := exec.CommandContext(ctx, elsewhere, "-households", "8", "-ticks", "3")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin", "NATS_URL=")
	out, err = cmd.CombinedOutput()
	require.Error(t, err)
	require.True(t, strings.Contains(string(out), "install them beside it or on PATH"), "%s", out)
}
