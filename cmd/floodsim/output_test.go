package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
)

// TestOutputNotWritable fails at once, exit code 2 as for any bad flag,
// when an output file cannot be written: before connecting to the server
// (whose agents' ledgers a run would spend) or spawning anything.
func TestOutputNotWritable(t *testing.T) {
	ns, url := testenv.Server(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dir", "r")
	for _, bad := range [][]string{
		{"-html", missing + ".html"}, {"-json", missing + ".json"}, {"-outcomes", missing + ".jsonl"},
		{"-json", dir}, // a directory
		// A good -json and a bad -html: neither is left behind.
		{"-json", filepath.Join(dir, "good.json"), "-html", missing + ".html"},
	} {
		args := append([]string{"-spawn=false", "-nats", url, "-expect-agents", "3", "-agent-wait", "1s"}, small...)
		var stderr bytes.Buffer
		require.Equal(t, 2, mainCode(append(args, bad...), env(), io.Discard, &stderr), "%v: %s", bad, &stderr)
		flag, path := bad[len(bad)-2], bad[len(bad)-1]
		require.Regexp(t, `^floodsim: `+flag+`: cannot write the file: open `+path+`: `, stderr.String(), bad)
		_, err := os.Stat(filepath.Join(dir, "good.json"))
		require.ErrorIs(t, err, os.ErrNotExist, "a file created for the run is removed")
	}
	// And spawning, it does not build or start anything first (here it
	// would fail on -bin).
	var stderr bytes.Buffer
	require.Equal(t, 2, mainCode(append([]string{"-bin", dir, "-outcomes", missing}, small...), env(), io.Discard, &stderr), stderr.String())
	require.Contains(t, stderr.String(), "floodsim: -outcomes: cannot write the file: ")
	// Two reports in one file: the second would replace the first.
	stderr.Reset()
	same := filepath.Join(dir, "report")
	require.Equal(t, 2, mainCode(append([]string{"-json", same, "-html", same}, small...), env(), io.Discard, &stderr), stderr.String())
	require.Equal(t, "floodsim: -json and -html name the same file, "+same+"\n", stderr.String())
	// Named otherwise: relative and absolute, and through a link.
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(same, link))
	t.Chdir(dir)
	for _, args := range [][]string{{"-outcomes", "report", "-json", same}, {"-outcomes", same, "-html", link}} {
		stderr.Reset()
		require.Equal(t, 2, mainCode(append(args, small...), env(), io.Discard, &stderr), stderr.String())
		require.Equal(t, fmt.Sprintf("floodsim: %s and %s name the same file, %s and %s\n", args[0], args[2], args[1], args[3]), stderr.String())
	}
	_, err := os.Stat(same)
	require.ErrorIs(t, err, os.ErrNotExist, "the file created for the run is removed")
	varz, err := ns.Varz(nil)
	require.NoError(t, err)
	require.Zero(t, varz.TotalConnections, "floodsim connected to the server")
}

// TestOutputsOfAFailedRun: a run that fails before its report leaves no
// file it created, and a file that was there before as it was.
func TestOutputsOfAFailedRun(t *testing.T) {
	_, url := testenv.Server(t) // no coordinator answers
	dir := t.TempDir()
	old := filepath.Join(dir, "old.json")
	require.NoError(t, os.WriteFile(old, []byte("an earlier report\n"), 0o644))
	fresh := filepath.Join(dir, "report.html")
	c, err := parseFlags(append([]string{"-spawn=false", "-nats", url, "-agent-wait", "500ms", "-json", old, "-html", fresh}, small...), env(), io.Discard)
	require.NoError(t, err)
	err = run(t.Context(), c, io.Discard, io.Discard)
	require.ErrorContains(t, err, "the coordinator did not answer")
	data, err := os.ReadFile(old)
	require.NoError(t, err)
	require.Equal(t, "an earlier report\n", string(data))
	_, err = os.Stat(fresh)
	require.ErrorIs(t, err, os.ErrNotExist)
}

// TestOutputToStdout writes a report to the file floodsim's stdout is
// redirected to, as -json /dev/stdout > file does: after what was printed
// there, not over it.
func TestOutputToStdout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.txt")
	stdout, err := os.Create(path)
	require.NoError(t, err)
	defer stdout.Close()
	saved := os.Stdout
	os.Stdout = stdout
	defer func() { os.Stdout = saved }()
	_, err = fmt.Fprint(os.Stdout, "the tick lines\n")
	require.NoError(t, err)
	again, err := os.OpenFile(path, os.O_WRONLY, 0) // what opening /dev/stdout gives
	require.NoError(t, err)
	out := &output{flag: "json", path: path, f: again}
	require.NoError(t, out.write([]byte("the report\n")))
	_, err = fmt.Fprint(os.Stdout, "written\n")
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "the tick lines\nthe report\nwritten\n", string(data))
}

// TestOutputToAPipe writes a report to a pipe, as -json /dev/stdout does:
// it cannot be truncated or written at an offset, and is written as it
// comes.
func TestOutputToAPipe(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	out := &output{flag: "json", path: "a pipe", f: w}
	wrote := make(chan error, 1)
	go func() { wrote <- out.write([]byte("the report\n")) }()
	data, err := io.ReadAll(r)
	require.NoError(t, err)
	require.NoError(t, <-wrote)
	require.Equal(t, "the report\n", string(data))
}
