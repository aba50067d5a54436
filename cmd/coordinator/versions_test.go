package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// jobV1 is a three-step saga of role "clerk"; jobV2 has two steps, the
// second of a role version 1 does not name.
const (
	jobV1 = `{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","version":1,
		"steps":[{"name":"open","role":"clerk"},{"name":"file","role":"clerk"},{"name":"archive","role":"clerk"}]}]}`
	jobV2 = `{"roles":["clerk","auditor"],"sagas":[{"name":"job","subject":"job","version":2,
		"steps":[{"name":"open","role":"clerk"},{"name":"audit","role":"auditor"}]}]}`
)

// program runs the coordinator program as main does, with -definitions
// file, until the returned stop is called, and waits until it drives
// sagas. stop returns what the program returned.
func program(t *testing.T, url, file string) (stop func() error) {
	t.Helper()
	logs, stop := runProgram(t, "-nats", url, "-definitions", file, "-log-format", "json")
	t.Cleanup(func() { require.NoError(t, stop()) })
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"msg":"coordinator running"`) },
		10*time.Second, 10*time.Millisecond, "logs: %s", logs.String())
	return stop
}

// runProgram runs the coordinator program as main does, with args and an
// empty environment, logging to the returned buffer, until stop is
// called; stop returns what the program returned, the same at every call.
func runProgram(t *testing.T, args ...string) (logs *testenv.SyncBuffer, stop func() error) {
	t.Helper()
	getenv := func(string) string { return "" }
	c, err := parseFlags(args, getenv, io.Discard)
	require.NoError(t, err)
	logs = &testenv.SyncBuffer{}
	log, err := cli.NewLogger(logs, "info", c.observe.LogFormat)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, c, getenv, log) }()
	return logs, sync.OnceValue(func() error {
		cancel()
		return <-done
	})
}

// command is what the test compares of a command on the wire.
type command struct {
	Subject string
	SagaID  string
	Seq     int
}

// clerk sees every command of the job sagas on the wire, in order, and
// answers those it is told to, as an agent written against the wire alone
// would.
type clerk struct {
	nc   *nats.Conn
	cmds chan messages.Command
	seen []command
}

func newClerk(t *testing.T, nc *nats.Conn) *clerk {
	t.Helper()
	c := &clerk{nc: nc, cmds: make(chan messages.Command, 64)}
	sub, err := nc.Subscribe("saga.job.>", func(m *nats.Msg) {
		var cmd messages.Command
		if json.Unmarshal(m.Data, &cmd) == nil {
			c.cmds <- cmd
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	return c
}

// next returns the next command on the wire, which must be for step of
// saga id.
func (c *clerk) next(t *testing.T, id, step string) messages.Command {
	t.Helper()
	select {
	case cmd := <-c.cmds:
		c.seen = append(c.seen, command{Subject: cmd.Subject(), SagaID: cmd.SagaID, Seq: cmd.Seq})
		require.Equal(t, id, cmd.SagaID)
		require.Equal(t, step, cmd.Step)
		return cmd
	case <-time.After(10 * time.Second):
		t.Fatalf("no command for %s of %s; seen %v", step, id, c.seen)
		return messages.Command{}
	}
}

// ok answers cmd: done.
func (c *clerk) ok(t *testing.T, cmd messages.Command) {
	t.Helper()
	data, err := json.Marshal(messages.ReplyTo(&cmd, messages.OK, ""))
	require.NoError(t, err)
	_, err = c.nc.Request(messages.ReplySubject(cmd.Saga, cmd.Step), data, 5*time.Second)
	require.NoError(t, err, "the reply stream stores it")
}

// TestRestartWithANewVersion runs the coordinator with a definitions file
// of job version 1 and starts a saga its agent does not answer yet; started
// again with a file of version 2 only, the coordinator finds version 1 in
// the bucket, where the first one stored it, and the saga ends by version
// 1's steps while a new one runs by version 2's. Started with a version 1
// of other steps, it refuses to run.
func TestRestartWithANewVersion(t *testing.T) {
	_, url := testenv.Server(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		return path
	}
	nc := testenv.Connect(t, url)
	agent := newClerk(t, nc)

	stop := program(t, url, write("v1.json", jobV1))
	old := testenv.Start(t, nc, "job", nil)
	agent.next(t, old, "open") // not answered
	require.NoError(t, stop())

	program(t, url, write("v2.json", jobV2))
	agent.ok(t, agent.next(t, old, "open")) // sent again by the new coordinator
	agent.ok(t, agent.next(t, old, "file"))
	agent.ok(t, agent.next(t, old, "archive"))
	x := testenv.WaitStatus(t, nc, old, saga.Completed)
	require.Equal(t, int64(1), x.Version)
	require.Equal(t, []string{"open", "file", "archive"}, x.Completed)

	fresh := testenv.Start(t, nc, "job", nil)
	agent.ok(t, agent.next(t, fresh, "open"))
	agent.ok(t, agent.next(t, fresh, "audit"))
	x = testenv.WaitStatus(t, nc, fresh, saga.Completed)
	require.Equal(t, int64(2), x.Version)
	require.Equal(t, []string{"open", "audit"}, x.Completed)

	// Every command on the wire, in order. The one sent again is numbered
	// past the commands the first coordinator might have sent after it
	// stored the saga: one per later step of version 1.
	require.Equal(t, []command{
		{Subject: "saga.job.open", SagaID: old, Seq: 1},
		{Subject: "saga.job.open", SagaID: old, Seq: 4},
		{Subject: "saga.job.file", SagaID: old, Seq: 5},
		{Subject: "saga.job.archive", SagaID: old, Seq: 6},
		{Subject: "saga.job.open", SagaID: fresh, Seq: 1},
		{Subject: "saga.job.audit", SagaID: fresh, Seq: 2},
	}, agent.seen)
	select {
	case cmd := <-agent.cmds:
		t.Fatalf("a command more: %+v", cmd)
	default:
	}
}

// TestChangedVersionRefused: a coordinator started with a definitions
// file whose version 1 differs from the stored version 1 stops at once,
// naming the definition and what to do.
func TestChangedVersionRefused(t *testing.T) {
	_, url := testenv.Server(t)
	dir := t.TempDir()
	v1 := filepath.Join(dir, "v1.json")
	require.NoError(t, os.WriteFile(v1, []byte(jobV1), 0o600))
	require.NoError(t, program(t, url, v1)())

	changed := filepath.Join(dir, "changed.json")
	require.NoError(t, os.WriteFile(changed, []byte(strings.Replace(jobV1, `"archive"`, `"shred"`, 1)), 0o600))
	getenv := func(string) string { return "" }
	c, err := parseFlags([]string{"-nats", url, "-definitions", changed}, getenv, io.Discard)
	require.NoError(t, err)
	log, err := cli.NewLogger(io.Discard, "info", "text")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, c, getenv, log) }()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the coordinator with a changed version 1 kept running")
	}
	require.EqualError(t, err, `definition "job" version 1 given at start differs from the one stored under d.job.1, `+
		`given or registered before; give the changed one a new version: saga definition differs from the stored one of the same version`)
}
