package agentmain_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/agentmain"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// childEnv, when set, makes the test binary the till's agent program: the
// program tests run it as a process of its own.
const childEnv = "AGENTMAIN_TEST_PROGRAM"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(agentmain.Main(till()))
	}
	os.Exit(m.Run())
}

// float is the till's opening float, a flag of the role: a whole number,
// not negative.
type float int64

func (f *float) String() string { return strconv.FormatInt(int64(*f), 10) }

func (f *float) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return errors.New("a whole number, not negative")
	}
	*f = float(v)
	return nil
}

// till is a model's role as its program serves it: one step that takes a
// coin from the till's float, which a flag of the role opens; a metric of
// the role's own; and an answer on "till.float" beside the agent.
func till() agentmain.Role {
	open := float(10)
	take := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
			var f int64
			if _, err := tx.Get("float", &f); err != nil {
				return nil, err
			}
			if err := tx.Put("float", f-1); err != nil {
				return nil, err
			}
			return messages.Context{}.MustSet("float", f-1), nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	return agentmain.Role{
		Name:  "till",
		Steps: []agent.Step{{Saga: "pay", Name: "take", Handler: take}},
		Flags: func(fs *flag.FlagSet) { fs.Var(&open, "float", "the opening float") },
		Init: func(ctx context.Context, s agent.Seeder) error {
			_, err := s.Init(ctx, "float", int64(open))
			return err
		},
		Serve: func(ctx context.Context, nc *nats.Conn, _ *slog.Logger) error {
			sub, err := nc.Subscribe("till.float", func(m *nats.Msg) { _ = m.Respond([]byte(open.String())) })
			if err != nil {
				return err
			}
			<-ctx.Done()
			return sub.Unsubscribe()
		},
		Metrics: func(reg prometheus.Registerer, _ *participant.Agent, _ *slog.Logger) error {
			return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "till_open_float", Help: "The opening float."},
				func() float64 { return float64(open) }))
		},
	}
}

func paySaga() saga.Definition {
	return saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{{Name: "take", Role: "till", Compensation: "give_back"}}}
}

// TestProgram runs the till's program as a process of its own, with its
// role's flag, against a coordinator: the saga takes a coin from the float
// the flag opened, the role's own answer and metric are served beside the
// agent's counters, and SIGTERM stops it cleanly.
func TestProgram(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{paySaga()})
	var logs testenv.SyncBuffer
	cmd := exec.Command(os.Args[0], "-float", "42", "-metrics-addr", "127.0.0.1:0", "-log-format", "json", "-name", "till-a")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NATS_URL="+url)
	cmd.Stderr = &logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	addr := testenv.ServedAddr(t, &logs)

	nc := testenv.Connect(t, url)
	require.Eventually(t, func() bool {
		code, _ := testenv.Get(t, "http://"+addr+"/readyz")
		return code == 200
	}, 10*time.Second, 10*time.Millisecond, logs.String())
	md := testenv.ServiceMetadata(t, nc, messages.AgentService)
	require.Equal(t, map[string]string{"role": "till", "copy": "till-a", "pid": strconv.Itoa(cmd.Process.Pid), "serial": "false", "metrics": addr}, md,
		"the address is announced for discovery")
	// A container's health check: the program asks the copy serving its
	// port, which is a till's.
	check := exec.Command(os.Args[0], "-healthcheck", "-metrics-addr", addr)
	check.Env = append(os.Environ(), childEnv+"=1")
	out, err := check.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Equal(t, "healthcheck: 200 OK ready\n", string(out))
	id := testenv.Start(t, nc, "pay", messages.Context{})
	x := testenv.WaitStatus(t, nc, id, saga.Completed)
	var left int64
	require.NoError(t, x.Context.Get("float", &left))
	require.EqualValues(t, 41, left, "the coin came from the float the flag opened")

	m, err := nc.Request("till.float", nil, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "42", string(m.Data))
	_, metrics := testenv.Get(t, "http://"+addr+"/metrics")
	require.Contains(t, metrics, "till_open_float 42\n")
	require.Contains(t, metrics, `natsaga_agent_executed_total{agent="till-a",role="till"} 1`)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("the program did not stop on SIGTERM: %s", logs.String())
	}
	require.Contains(t, logs.String(), `"msg":"till-agent stopped cleanly"`)
}

// TestArguments runs the program with arguments it must refuse, and with
// -h, which lists the role's flag beside the common ones.
func TestArguments(t *testing.T) {
	bad := till()
	bad.Name = "two words"
	noSteps := till()
	noSteps.Steps = nil
	for _, tc := range []struct {
		name string
		role agentmain.Role
		args []string
		code int
		says string
	}{
		{"help", till(), []string{"-h"}, 0, "-float value"},
		{"the role's flag refuses a value", till(), []string{"-float", "-3"}, 2, `invalid value "-3" for flag -float: a whole number, not negative`},
		{"unknown flag", till(), []string{"-bogus"}, 2, "flag provided but not defined: -bogus"},
		{"stray argument", till(), []string{"extra"}, 2, "unexpected arguments: [extra]"},
		{"record values", till(), []string{"-record-values", "0"}, 2, "-record-values 0: at least 1"},
		{"concurrency", till(), []string{"-concurrency", "-1"}, 2, "-concurrency -1: 1 to 4096"},
		{"too much concurrency", till(), []string{"-concurrency", "2000000000"}, 2, "-concurrency 2000000000: 1 to 4096"},
		{"ack wait", till(), []string{"-ack-wait", "1ms"}, 2, "-ack-wait 1ms: between 1s and 1h0m0s"},
		{"ack wait too long", till(), []string{"-ack-wait", "61m"}, 2, "-ack-wait 1h1m0s: between 1s and 1h0m0s"},
		{"replicas", till(), []string{"-replicas", "7"}, 2, "-replicas 7: 1 to 5"},
		{"log format", till(), []string{"-log-format", "xml"}, 2, "xml"},
		{"a role that is no token", bad, nil, 2, "two words-agent: role"},
		{"no steps", noSteps, nil, 2, "no steps"},
		{"a URL that does not parse", till(), []string{"-nats", "://x"}, 2, "the URL does not parse"},
		{"a negative wait", till(), []string{"-reconnect-wait", "-1s"}, 2, "-reconnect-wait -1s: must not be negative"},
		{"a health check's bad flag", till(), []string{"-healthcheck", "-bogus"}, 1, "flag provided but not defined: -bogus"},
		{"a health check's bad log format", till(), []string{"-healthcheck", "-log-format", "xml"}, 1, "xml"},
		{"a scheme NATS does not speak", till(), []string{"-nats", "ftp://x"}, 2, `scheme "ftp"`},
		{"a health check's bad URL", till(), []string{"-healthcheck", "-metrics-addr", "127.0.0.1:1", "-nats", "ftp://x"}, 1, `scheme "ftp"`},
		{"a health check's missing credentials", till(), []string{"-healthcheck", "-metrics-addr", "127.0.0.1:1", "-creds", "/nonexistent/x.creds"}, 1, "stat /nonexistent/x.creds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := agentmain.Run(tc.role, tc.args, func(string) string { return "" }, &stderr)
			require.Equal(t, tc.code, code, stderr.String())
			require.Equal(t, 1, strings.Count(stderr.String(), tc.says), "said once: %s", stderr.String())
		})
	}
}

// TestHealthServedWhileConnecting serves the till against an address where
// no NATS server answers: while it waits to connect, /livez answers 200
// and /readyz 503, saying so.
func TestHealthServedWhileConnecting(t *testing.T) {
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- agentmain.Serve(ctx, till(), []string{"-nats", "nats://127.0.0.1:1", "-connect-wait", "1m",
			"-metrics-addr", "127.0.0.1:0"}, func(string) string { return "" }, log)
	}()
	defer func() {
		cancel()
		<-done
	}()
	testenv.RequireConnecting(t, testenv.ServedAddr(t, &logs))
}

// TestServeRefusesArguments returns the parse's error, -h included.
func TestServeRefusesArguments(t *testing.T) {
	err := agentmain.Serve(context.Background(), till(), []string{"-h"}, func(string) string { return "" }, nil)
	require.ErrorIs(t, err, flag.ErrHelp)
	err = agentmain.Serve(context.Background(), till(), []string{"-float", "x"}, func(string) string { return "" }, nil)
	require.ErrorContains(t, err, fmt.Sprintf("invalid value %q for flag -float", "x"))
}

// TestSeedKeptIsSaid starts the till twice on one server, the second time
// with another opening float: the first stores its float, and the second
// says the value it was given is not stored.
func TestSeedKeptIsSaid(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{paySaga()})
	getenv := natsURLEnv(url)
	serve := func(float string) string {
		t.Helper()
		var logs testenv.SyncBuffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- agentmain.Serve(ctx, till(), []string{"-float", float}, getenv, log) }()
		require.Eventually(t, func() bool { return strings.Contains(logs.String(), "agent serving") }, 10*time.Second, 10*time.Millisecond)
		cancel()
		require.NoError(t, <-done)
		return logs.String()
	}
	require.NotContains(t, serve("42"), "state kept")
	require.Contains(t, serve("7"), `msg="state kept: the key has a value already, so the one given at start is not stored" key=float`)
}

// TestServeAfterInit serves a role whose Init seeds its state and whose
// Serve answers from that state: Serve starts only once Init has seeded
// it, so that no answer of the role's own sees the state before its
// opening value (a driver that asks at once would read none).
func TestServeAfterInit(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{paySaga()})
	getenv := natsURLEnv(url)
	r := till()
	var seeded atomic.Bool
	init := r.Init
	r.Init = func(ctx context.Context, s agent.Seeder) error {
		err := init(ctx, s)
		seeded.Store(err == nil)
		return err
	}
	serving := make(chan bool, 1)
	r.Serve = func(ctx context.Context, _ *nats.Conn, _ *slog.Logger) error {
		serving <- seeded.Load()
		<-ctx.Done()
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agentmain.Serve(ctx, r, nil, getenv, testenv.Logger(t)) }()
	select {
	case ok := <-serving:
		require.True(t, ok, "Serve started before Init seeded the role's state")
	case err := <-done:
		t.Fatalf("the agent stopped before serving: %v", err)
	}
	cancel()
	require.NoError(t, <-done)
}

// natsURLEnv is an environment that holds only NATS_URL, url.
func natsURLEnv(url string) func(string) string {
	return func(k string) string {
		if k == "NATS_URL" {
			return url
		}
		return ""
	}
}
