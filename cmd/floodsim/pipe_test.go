package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/procs"
)

// TestStopsWhenItsOutputIsClosed runs floodsim as `floodsim | head -2`
// does: its reader goes away after two lines. floodsim stops as it does
// when interrupted, with its own exit code: the programs it started stop,
// and its temporary data directory is removed. Without the signal asked
// for, Go ends it at its next write, and the directory stays.
func TestStopsWhenItsOutputIsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the programs")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := t.TempDir()
	paths, err := procs.Build(ctx, bin, false, append([]string{"floodsim"}, procs.Programs...)...)
	require.NoError(t, err)

	tmp := t.TempDir()
	cmd := exec.CommandContext(ctx, paths["floodsim"])
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "NATS_URL=")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())

	// The second line names the temporary data directory; the run's
	// programs start after it, so its ticks are still to come.
	lines := bufio.NewScanner(out)
	var data string
	for data == "" && lines.Scan() {
		if _, rest, ok := strings.Cut(lines.Text(), "data in "); ok {
			data, _, _ = strings.Cut(rest, ",")
		}
	}
	require.NotEmpty(t, data, "no data directory named; stderr:\n%s", &stderr)
	require.Equal(t, tmp, filepath.Dir(data))
	require.NoError(t, out.Close())

	err = cmd.Wait()
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "floodsim: %v; stderr:\n%s", err, &stderr)
	require.Equal(t, 141, exit.ExitCode(), "stderr:\n%s", &stderr)
	require.Contains(t, stderr.String(), "floodsim: stopped: its standard output was closed")
	require.NoDirExists(t, data)
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	require.Empty(t, left)
	// No program it started is left running.
	procDirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	require.NoError(t, err)
	for _, f := range procDirs {
		cmdline, err := os.ReadFile(f)
		if err == nil {
			require.False(t, strings.HasPrefix(string(cmdline), bin), "%s still runs: %q", f, cmdline)
		}
	}
}

// TestOnlyAClosedOutputStopsTheRun: SIGPIPE also comes from a connection
// the server closed (a server at its max_connections). The signal alone
// leaves the run going; a write to the output that finds its reader gone
// stops it.
func TestOnlyAClosedOutputStopsTheRun(t *testing.T) {
	heard := make(chan os.Signal, 1)
	signal.Notify(heard, syscall.SIGPIPE)
	defer signal.Stop(heard)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	ctx, out, stop := stopOnClosedOutput(context.Background(), w)
	defer stop()

	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGPIPE))
	<-heard
	_, err = io.WriteString(out, "tick 1\n")
	require.NoError(t, err)
	require.Never(t, func() bool { return ctx.Err() != nil }, 100*time.Millisecond, 10*time.Millisecond,
		"a SIGPIPE not of the output stopped the run")

	require.NoError(t, r.Close())
	_, err = io.WriteString(out, "tick 2\n")
	require.ErrorIs(t, err, syscall.EPIPE)
	require.ErrorIs(t, context.Cause(ctx), errOutputClosed)
	require.NoError(t, w.Close())
}
