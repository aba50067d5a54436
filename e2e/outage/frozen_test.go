package outage_test

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/internal/testenv"
)

// TestFrozenServerIsLeft stops a nats-server process with SIGSTOP, as a
// paused container or VM is stopped: its sockets stay open, and only pings
// find it gone. A program's connection and a client's leave it within
// 35 s (three pings 5 s apart unanswered), which is when, in a cluster,
// they move to another node; nats.go's defaults took minutes. Woken, the
// server has both back.
func TestFrozenServerIsLeft(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and waits out its pings")
	}
	dir := t.TempDir()
	bins, err := procs.Build(context.Background(), filepath.Join(dir, "bin"), false, procs.NATSServer)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	var out testenv.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(out.String())
		}
	})
	server, err := procs.Start("nats-server", bins[procs.NATSServer], []string{"-js", "-sd", filepath.Join(dir, "js"), "-a", "127.0.0.1", "-p", strconv.Itoa(port)}, nil, &out)
	require.NoError(t, err)
	t.Cleanup(server.Kill)
	t.Cleanup(func() { _ = server.Signal(syscall.SIGCONT) })
	url := "nats://127.0.0.1:" + strconv.Itoa(port)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	program, err := (&cli.Conn{URL: url, Wait: 30 * time.Second}).Connect(ctx, "frozen-test", slog.New(slog.NewTextHandler(&out, nil)))
	require.NoError(t, err)
	t.Cleanup(program.Close)
	cl, err := client.Connect(ctx, url, client.Options{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	conns := map[string]*nats.Conn{"program": program, "client": cl.Conn()}

	require.NoError(t, server.Signal(syscall.SIGSTOP))
	frozen := time.Now()
	for name, nc := range conns {
		require.Eventually(t, func() bool { return !nc.IsConnected() }, 35*time.Second-time.Since(frozen), 50*time.Millisecond,
			"the %s's connection still takes the frozen server for up", name)
	}
	t.Logf("both connections left the frozen server after %s", time.Since(frozen).Round(time.Second))

	require.NoError(t, server.Signal(syscall.SIGCONT))
	for name, nc := range conns {
		require.Eventually(t, nc.IsConnected, 30*time.Second, 50*time.Millisecond, "the %s never reconnected", name)
	}
}
