package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
)

// TestProgramServesMetricsAndHealth runs the coordinator program as main
// does, with -metrics-addr on a free port and JSON logs, and asks it for
// its metrics and readiness over HTTP and through -healthcheck.
func TestProgramServesMetricsAndHealth(t *testing.T) {
	_, url := testenv.Server(t)
	getenv := func(string) string { return "" }
	logs, stop := runProgram(t, "-nats", url, "-metrics-addr", "127.0.0.1:0", "-log-format", "json")
	t.Cleanup(func() { require.NoError(t, stop()) })

	addr := testenv.ServedAddr(t, logs)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"coordinator running"`) },
		10*time.Second, 10*time.Millisecond)
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "every log line is JSON: %s", line)
	}

	// The address is announced for discovery.
	md := testenv.ServiceMetadata(t, testenv.Connect(t, url), messages.CoordinatorService)
	require.Equal(t, addr, md["metrics"], "%v", md)
	require.Equal(t, "active", md["state"])

	var out bytes.Buffer
	require.Equal(t, 0, cli.Healthcheck(addr, "coordinator", &out), out.String())
	code := mainCode([]string{"-healthcheck", "-metrics-addr", addr}, getenv, &out)
	require.Equal(t, 0, code, out.String())
	out.Reset()
	require.Equal(t, 1, cli.Healthcheck(addr, "household-agent", &out), "another program's port")
	require.Equal(t, "healthcheck: "+addr+" serves coordinator, not household-agent\n", out.String())

	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, want := range []string{
		`natsaga_sagas_started_total{saga="subsidy"} 0`,
		`natsaga_sagas_finished_total{saga="elevation",status="timed_out"} 0`,
		`natsaga_sagas_in_flight{state="active"} 0`,
		"go_goroutines ",
	} {
		require.Contains(t, string(body), want)
	}

	// Stopped, it serves nothing: the health check fails.
	require.NoError(t, stop())
	out.Reset()
	require.Equal(t, 1, mainCode([]string{"-healthcheck", "-metrics-addr", addr}, getenv, &out))
	require.Contains(t, out.String(), "connection refused")
}

// TestHealthServedWhileConnecting runs the coordinator program against an
// address where no NATS server answers: while it waits to connect, /livez
// answers 200 and /readyz 503, saying so.
func TestHealthServedWhileConnecting(t *testing.T) {
	logs, stop := runProgram(t, "-nats", "nats://127.0.0.1:1", "-connect-wait", "1m", "-metrics-addr", "127.0.0.1:0", "-log-format", "json")
	defer func() { _ = stop() }()
	testenv.RequireConnecting(t, testenv.ServedAddr(t, logs))
}

// TestFlagsOutOfRange: each flag out of its range is refused, exit 2,
// with its own name and range; 0, which the library reads as a default,
// is refused where the flag shows its default. A health check given the
// same flag fails, exit 1, saying why, whatever serves the port.
func TestFlagsOutOfRange(t *testing.T) {
	getenv := func(string) string { return "" }
	missing := filepath.Join(t.TempDir(), "missing.json")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-replicas", "0"}, "-replicas 0: between 1 and 5"},
		{[]string{"-replicas", "7"}, "-replicas 7: between 1 and 5"},
		{[]string{"-ack-wait", "0"}, "-ack-wait 0s: between 1s and 1h0m0s"},
		{[]string{"-ack-wait", "2h"}, "-ack-wait 2h0m0s: between 1s and 1h0m0s"},
		{[]string{"-lease-ttl", "500ms"}, "-lease-ttl 500ms: between 1s and 1h0m0s"},
		{[]string{"-lease-ttl", "100000h"}, "-lease-ttl 100000h0m0s: between 1s and 1h0m0s"},
		{[]string{"-retention", "0"}, "-retention 0s: at least 1s, or negative to keep finished sagas for ever"},
		{[]string{"-retention", "999ms"}, "-retention 999ms: at least 1s, or negative to keep finished sagas for ever"},
		{[]string{"-command-batch", "0"}, "-command-batch 0: between 1 and 256"},
		{[]string{"-max-active", "0"}, "-max-active 0: a positive count, or negative for no limit"},
		{[]string{"-max-active-bytes", "0"}, "-max-active-bytes 0: a positive number of bytes, or negative for no limit"},
		{[]string{"-max-active-bytes", "1GiB"}, `invalid value "1GiB" for flag -max-active-bytes`},
		// Connection flags no server could take.
		{[]string{"-nats", "://x"}, "the URL does not parse"},
		{[]string{"-nats", "ftp://x"}, `scheme "ftp": a NATS URL is nats://, tls://, ws:// or wss://`},
		{[]string{"-creds", missing}, "NATS security options: stat " + missing},
		{[]string{"-connect-wait", "-1s"}, "-connect-wait -1s: must not be negative"},
		{[]string{"-definitions", missing}, "-definitions open " + missing + ": no such file or directory"},
	} {
		var out bytes.Buffer
		require.Equal(t, 2, mainCode(tc.args, getenv, &out), "%v", tc.args)
		require.Contains(t, out.String(), tc.want, "%v", tc.args)
		out.Reset()
		check := append([]string{"-healthcheck", "-metrics-addr", "127.0.0.1:1"}, tc.args...)
		require.Equal(t, 1, mainCode(check, getenv, &out), "%v", check)
		require.Contains(t, out.String(), tc.want, "%v", check)
	}
}

// TestProgramStopsAtOnceWithTheServerGone: a coordinator told to stop
// while its server is gone does not wait for it (it took 12 s): the
// replies' iterator is stopped, not drained, and the lease is left to
// expire.
func TestProgramStopsAtOnceWithTheServerGone(t *testing.T) {
	s, url := testenv.Server(t)
	logs, stop := runProgram(t, "-nats", url, "-log-format", "json")
	t.Cleanup(func() { _ = stop() })
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"coordinator running"`) },
		10*time.Second, 10*time.Millisecond)
	s.Shutdown()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "disconnected from NATS") },
		10*time.Second, 10*time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		t.Fatal("the coordinator waited for a server that is gone")
	}
	require.Contains(t, logs.String(), "lease not released: not connected to NATS")
}
