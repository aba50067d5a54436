package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// natsaga runs the command in-process and returns its exit code and output.
func natsaga(t *testing.T, url string, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := mainCode(append([]string{"-nats", url}, args...), func(string) string { return "" }, &out, &errOut)
	return code, out.String() + errOut.String()
}

// TestOperatorRetriesFailedCompensation drives a saga whose compensation
// keeps failing to "failed", lists it with the operator tool, repairs the
// agent and retries it to rolled_back.
func TestOperatorRetriesFailedCompensation(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{
		{Name: "reserve", Role: "ops"}, {Name: "confirm", Role: "ops"},
	}, CompensationRetry: saga.RetryPolicy{MaxAttempts: 2, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}}
	testenv.Coordinator(t, url, []saga.Definition{def})

	var broken atomic.Bool
	broken.Store(true)
	var undone atomic.Int32
	ok := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	testenv.Agent(t, url, participant.Options{Role: "ops", Steps: []agent.Step{
		{Saga: "ops", Name: "reserve", Handler: agent.Handler{Execute: ok,
			Compensate: func(context.Context, agent.Tx, *messages.Command) error {
				if broken.Load() {
					return errors.New("ledger offline")
				}
				undone.Add(1)
				return nil
			}}},
		{Saga: "ops", Name: "confirm", Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				return nil, agent.Reject("confirmation refused")
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil }}},
	}})

	code, out := natsaga(t, url, "-json", "start", "ops", `{"order":"o-1"}`)
	require.Equal(t, 0, code, out)
	var started messages.StartResponse
	require.NoError(t, json.Unmarshal([]byte(out), &started))

	nc := testenv.Connect(t, url)
	x := testenv.WaitStatus(t, nc, started.SagaID, saga.Failed)
	require.Contains(t, x.Error, "ledger offline")
	require.Contains(t, x.Error, "after 2 attempts")

	code, out = natsaga(t, url, "list", "-json", "-status", "failed")
	require.Equal(t, 0, code, out)
	var list messages.ListResponse
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Len(t, list.Sagas, 1)
	require.Contains(t, string(list.Sagas[0]), started.SagaID)

	broken.Store(false)
	code, out = natsaga(t, url, "retry", started.SagaID)
	require.Equal(t, 0, code, out)
	x = testenv.WaitStatus(t, nc, started.SagaID, saga.RolledBack)
	require.Equal(t, []string{"reserve"}, x.Compensated)
	require.Equal(t, int32(1), undone.Load())

	code, out = natsaga(t, url, "retry", started.SagaID)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, messages.CodeConflict)

	// The saga's story, from the event stream: started, rolling back,
	// failed, rolling back again after the retry, rolled back.
	code, out = natsaga(t, url, "-json", "events", "-all", "-saga", "ops")
	require.Equal(t, 0, code, out)
	var statuses []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev messages.Event
		require.NoError(t, json.Unmarshal([]byte(line), &ev), line)
		require.Equal(t, started.SagaID, ev.SagaID)
		statuses = append(statuses, ev.Status)
	}
	require.Equal(t, []string{"in_progress", "compensating", "failed", "compensating", "rolled_back"}, statuses)
	code, out = natsaga(t, url, "-json", "events", "-status", "failed", "-n", "1")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, `"status":"failed"`)

	code, out = natsaga(t, url, "-json", "summary")
	require.Equal(t, 0, code, out)
	var s messages.Summary
	require.NoError(t, json.Unmarshal([]byte(out), &s))
	require.Equal(t, 1, s.RolledBack)
	require.Equal(t, 0, s.Failed)
}

// TestOperatorAbortsAStuckSaga: a saga whose second step's handler never
// returns is aborted with the operator tool: the step in flight and the
// completed one are compensated, and it ends rolled back with the reason.
func TestOperatorAbortsAStuckSaga(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{
		{Name: "reserve", Role: "ops"}, {Name: "confirm", Role: "ops"},
	}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	stuck := make(chan struct{})
	var undone atomic.Int32
	undo := func(context.Context, agent.Tx, *messages.Command) error { undone.Add(1); return nil }
	testenv.Agent(t, url, participant.Options{Role: "ops", Steps: []agent.Step{
		{Saga: "ops", Name: "reserve", Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: undo}},
		{Saga: "ops", Name: "confirm", Handler: agent.Handler{
			Execute: func(ctx context.Context, _ agent.Tx, _ *messages.Command) (messages.Context, error) {
				<-stuck
				return nil, ctx.Err()
			},
			Compensate: undo}},
	}})
	// Registered after the agent, so released first: the handler
	// returns before the agent stops.
	t.Cleanup(func() { close(stuck) })

	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "ops", nil)
	require.Eventually(t, func() bool { return testenv.Status(t, nc, id).Current == 1 }, 10*time.Second, 5*time.Millisecond)

	code, out := natsaga(t, url, "abort", "-reason", "nobody confirms", id)
	require.Equal(t, 0, code, out)
	require.Equal(t, "aborted: the saga is compensating its completed steps, and the one in flight\n", out)
	x := testenv.WaitStatus(t, nc, id, saga.RolledBack)
	require.Equal(t, "aborted: nobody confirms", x.Error)
	require.Equal(t, []string{"confirm", "reserve"}, x.Compensated)
	// The execute of confirm never recorded a result: its compensation
	// is the barrier's "nothing to undo", and bars the execute.
	require.Equal(t, int32(1), undone.Load(), "reserve's compensation ran, once")

	code, out = natsaga(t, url, "abort", id)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, messages.CodeConflict)
	require.Contains(t, out, "status rolled_back")
}

// TestAnswersAndErrors prints a saga's state in the coordinator's answer
// with -json, and an error the coordinator answered with: in the answer on
// stdout with -json, as a line naming the code on stderr without; both
// exit 1. A request no coordinator serves fails at -timeout, saying so.
func TestAnswersAndErrors(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "reserve", Role: "nobody"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "ops", nil)

	var stdout, stderr bytes.Buffer
	code := mainCode([]string{"-nats", url, "-json", "status", id}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Empty(t, stderr.String())
	var resp messages.StatusResponse
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &resp))
	require.Equal(t, messages.Version, resp.V)
	require.Nil(t, resp.Error)
	var x saga.Execution
	require.NoError(t, json.Unmarshal(resp.Saga, &x))
	require.Equal(t, testenv.Status(t, nc, id), x)

	stdout.Reset()
	code = mainCode([]string{"-nats", url, "-json", "status", "nope"}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 1, code)
	require.Empty(t, stderr.String())
	resp = messages.StatusResponse{}
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &resp), stdout.String())
	require.Equal(t, messages.StatusResponse{V: messages.Version,
		Error: &messages.WireError{Code: messages.CodeNotFound, Message: "get nope: unknown saga"}}, resp)

	stdout.Reset()
	code = mainCode([]string{"-nats", url, "status", "nope"}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 1, code)
	require.Empty(t, stdout.String())
	require.Equal(t, "natsaga: not_found: get nope: unknown saga\n", stderr.String())

	_, empty := testenv.Server(t)
	stderr.Reset()
	code = mainCode([]string{"-nats", empty, "-timeout", "300ms", "summary"}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "natsaga: no coordinator is serving (none running, or all standing by) within 300ms: ")
	// No coordinator ever ran here: no event stream, no bucket.
	for args, want := range map[string]string{
		"events -n 3": "natsaga: watch: event stream NATSAGA_EVENTS: no coordinator has run on this server\n",
		"events":      "natsaga: watch: event stream NATSAGA_EVENTS: no coordinator has run on this server\n",
		"outcomes":    "natsaga: bucket natsaga_sagas: not found: no coordinator has run on this server\n",
	} {
		stderr.Reset()
		code = mainCode(append([]string{"-nats", empty}, strings.Fields(args)...), func(string) string { return "" }, &stdout, &stderr)
		require.Equal(t, 1, code, args)
		require.Equal(t, want, stderr.String(), args)
	}
	// No service answers: an empty list.
	stdout.Reset()
	code = mainCode([]string{"-nats", empty, "-json", "services"}, func(string) string { return "" }, &stdout, &stderr)
	require.Equal(t, 0, code)
	require.Equal(t, "[]\n", stdout.String())
	// quiet too, with no made-up summary, within -timeout.
	for _, args := range [][]string{{"-timeout", "300ms", "quiet", "-wait", "10s"}, {"-timeout", "300ms", "-json", "quiet"}} {
		stdout.Reset()
		stderr.Reset()
		code = mainCode(append([]string{"-nats", empty}, args...), func(string) string { return "" }, &stdout, &stderr)
		require.Equal(t, 1, code, args)
		require.Empty(t, stdout.String(), args)
		require.Contains(t, stderr.String(), "natsaga: no coordinator is serving (none running, or all standing by) within 300ms: ", args)
	}
}

// TestTickDoesNotGoBack: a tick behind the clock leaves it where it is,
// and the tool says so rather than print the clock's tick alone.
func TestTickDoesNotGoBack(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, nil)
	code, out := natsaga(t, url, "tick", "5")
	require.Equal(t, 0, code, out)
	require.True(t, strings.HasPrefix(out, "tick 5\n"), out)
	code, out = natsaga(t, url, "tick", "3")
	require.Equal(t, 0, code, out)
	require.True(t, strings.HasPrefix(out, "tick 5 (the clock was past tick 3 already: it does not go back)\n"), out)
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"bogus"}, {"-timeout", "0", "summary"}, {"status"}, {"tick", "-1"}, {"tick", "99999999999999999999999"}, {"start", "bad.type"}, {"start", "ops", "[1]"}, {"start", "-id", "a.b", "ops"}, {"events", "-n", "-1"}, {"events", "-n", "0"}, {"events", "-saga", "a.b"}, {"events", "-status", "bogus"}, {"events", "-status", "pending"}, {"events", "extra"}, {"events", "-n", "2", "-all"}, {"list", "-limit", "-1"}, {"list", "x"}, {"list", "-status", "bogus"},
		{"register"}, {"register", "a.json", "b.json"}, {"register", "/nonexistent/sagas.json"}, {"outcomes", "x"}, {"quiet", "-wait", "0"}, {"quiet", "x"}} {
		var out, errOut bytes.Buffer
		code := mainCode(args, func(string) string { return "" }, &out, &errOut)
		require.Equal(t, 2, code, "args %v", args)
		require.NotEmpty(t, errOut.String(), "args %v", args)
	}
}

// TestGlobalFlagAfterTheCommand: natsaga's own flag given after the
// command is refused saying where it goes.
func TestGlobalFlagAfterTheCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	code := mainCode([]string{"summary", "-nats", "nats://127.0.0.1:1"}, func(string) string { return "" }, &out, &errOut)
	require.Equal(t, 2, code)
	require.Contains(t, errOut.String(), "natsaga: -nats is natsaga's own flag: give it before the command (natsaga -nats ... summary)")
	errOut.Reset()
	require.Equal(t, 2, mainCode([]string{"summary", "-bogus"}, func(string) string { return "" }, &out, &errOut))
	require.NotContains(t, errOut.String(), "natsaga's own flag")
}

// TestContextNotAnObject: a start's context that is JSON but not an
// object is refused saying what it is, in JSON's terms.
func TestContextNotAnObject(t *testing.T) {
	for arg, want := range map[string]string{
		`[1]`:   "natsaga start: context is not a JSON object: it is a JSON array\n",
		`"x"`:   "natsaga start: context is not a JSON object: it is a JSON string\n",
		`7`:     "natsaga start: context is not a JSON object: it is a JSON number\n",
		`{"a":`: "natsaga start: context is not a JSON object: unexpected end of JSON input\n",
	} {
		var out, errOut bytes.Buffer
		code := mainCode([]string{"start", "ops", arg}, func(string) string { return "" }, &out, &errOut)
		require.Equal(t, 2, code, arg)
		require.True(t, strings.HasPrefix(errOut.String(), want), "%s: %s", arg, errOut.String())
	}
}

// TestNegativeNumbersAreArguments: a negative number where an argument
// goes is refused as that argument, and one that is a flag's value stays
// the flag's.
func TestNegativeNumbersAreArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tick", "-1"}, `natsaga tick: tick "-1": want a non-negative integer`},
		{[]string{"tick", "-json", "-7"}, `natsaga tick: tick "-7": want a non-negative integer`},
		{[]string{"tick", "--", "-1"}, `natsaga tick: tick "-1": want a non-negative integer`},
		{[]string{"list", "-limit", "-1"}, "natsaga list: -limit must not be negative"},
		{[]string{"list", "-limit=-1"}, "natsaga list: -limit must not be negative"},
		{[]string{"tick", "-7", "-json"}, `natsaga tick: tick "-7": want a non-negative integer`},
		{[]string{"list", "x", "-limit", "-1"}, "natsaga list: unexpected arguments [x]"},
	} {
		var out, errOut bytes.Buffer
		code := mainCode(tc.args, func(string) string { return "" }, &out, &errOut)
		require.Equal(t, 2, code, "args %v", tc.args)
		require.Contains(t, errOut.String(), tc.want, "args %v", tc.args)
		require.NotContains(t, errOut.String(), "flag provided but not defined", "args %v", tc.args)
	}
}

// TestFlagsAfterArguments: a command's flags may follow its arguments
// ("status SAGA_ID -json"), as they may precede them; after "--" every
// word is an argument.
func TestFlagsAfterArguments(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "reserve", Role: "nobody"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})

	code, out := natsaga(t, url, "start", "ops", `{"order":"o-1"}`, "-json")
	require.Equal(t, 0, code, out)
	var started messages.StartResponse
	require.NoError(t, json.Unmarshal([]byte(out), &started), out)
	require.NotEmpty(t, started.SagaID)

	code, out = natsaga(t, url, "status", started.SagaID, "-json")
	require.Equal(t, 0, code, out)
	var status messages.StatusResponse
	require.NoError(t, json.Unmarshal([]byte(out), &status), out)
	require.Contains(t, string(status.Saga), started.SagaID)

	code, out = natsaga(t, url, "start", "nope", "-json")
	require.Equal(t, 1, code, out)
	var refused messages.StartResponse
	require.NoError(t, json.Unmarshal([]byte(out), &refused), out)
	require.Equal(t, messages.CodeNotFound, refused.Error.Code)

	// With -id, a start run again starts the saga once: the second run
	// answers with the saga as it is, and says it was there.
	code, out = natsaga(t, url, "start", "-id", "o-2", "ops", `{"order":"o-2"}`)
	require.Equal(t, 0, code, out)
	require.Equal(t, "saga o-2: in_progress\n", out)
	code, out = natsaga(t, url, "start", "-id", "o-2", "ops", `{"order":"o-3"}`)
	require.Equal(t, 0, code, out)
	require.Equal(t, "saga o-2: in_progress (there already: this start started nothing, and its context was not used)\n", out)
	code, out = natsaga(t, url, "start", "-json", "-id", "o-2", "ops", `{"order":"o-3"}`)
	require.Equal(t, 0, code, out)
	require.JSONEq(t, `{"v":1,"saga_id":"o-2","status":"in_progress","existed":true}`, out)
	var sum messages.Summary
	code, out = natsaga(t, url, "-json", "summary")
	require.Equal(t, 0, code, out)
	require.NoError(t, json.Unmarshal([]byte(out), &sum), out)
	require.Equal(t, 2, sum.Active, "o-1 and o-2, started once")

	// After "--", "-json" is the saga id asked for, not the flag.
	code, out = natsaga(t, url, "status", "--", "-json")
	require.Equal(t, 1, code, out)
	require.Equal(t, "natsaga: not_found: get -json: unknown saga\n", out)
}

// TestListFollowsTheCursor lists more sagas than a page holds: the tool
// follows the cursor and prints each saga once, or the first -limit.
func TestListFollowsTheCursor(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "reserve", Role: "ops"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	nc := testenv.Connect(t, url)
	n := messages.MaxListPage + 5
	for range n {
		testenv.Start(t, nc, "ops", nil)
	}
	for _, tc := range []struct {
		args []string
		want int
	}{{nil, n}, {[]string{"-limit", "3"}, 3}, {[]string{"-limit", fmt.Sprint(messages.MaxListPage + 2)}, messages.MaxListPage + 2}} {
		code, out := natsaga(t, url, append([]string{"-json", "list"}, tc.args...)...)
		require.Equal(t, 0, code, out)
		var list messages.ListResponse
		require.NoError(t, json.Unmarshal([]byte(out), &list))
		require.Len(t, list.Sagas, tc.want, "%v", tc.args)
		ids := map[string]bool{}
		for _, raw := range list.Sagas {
			var x saga.Execution
			require.NoError(t, json.Unmarshal(raw, &x))
			require.False(t, ids[x.ID], "saga %s listed twice", x.ID)
			ids[x.ID] = true
		}
	}
}

// TestOperatorRegistersDefinitions registers a new version of a saga
// type, as JSON and as a table, starts a saga of it, and refuses a file
// that does not load before sending it.
func TestOperatorRegistersDefinitions(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "reserve", Role: "ops"}}}})
	dir := t.TempDir()
	file := dir + "/ops.json"
	require.NoError(t, os.WriteFile(file, []byte(`{"roles":["ops"],"sagas":[{"name":"ops","subject":"ops","version":2,
		"steps":[{"name":"reserve","role":"ops"},{"name":"confirm","role":"ops","timeout_ticks":2}]}]}`), 0o600))

	code, out := natsaga(t, url, "-json", "register", file)
	require.Equal(t, 0, code, out)
	var resp messages.RegisterResponse
	require.NoError(t, json.Unmarshal([]byte(out), &resp))
	require.Equal(t, []messages.RegisteredSaga{{Name: "ops", Version: 2, Latest: true}}, resp.Registered)

	// Sent again, the same version is registered already: unchanged.
	code, out = natsaga(t, url, "register", file)
	require.Equal(t, 0, code, out)
	require.Regexp(t, `(?m)^SAGA\s+VERSION\s+LATEST\s+UNCHANGED$`, out)
	require.Regexp(t, `(?m)^ops\s+2\s+true\s+true$`, out)

	code, out = natsaga(t, url, "-json", "start", "ops")
	require.Equal(t, 0, code, out)
	var started messages.StartResponse
	require.NoError(t, json.Unmarshal([]byte(out), &started))
	nc := testenv.Connect(t, url)
	require.Equal(t, int64(2), testenv.Status(t, nc, started.SagaID).Version)

	bad := dir + "/bad.json"
	require.NoError(t, os.WriteFile(bad, []byte(`{"roles":["ops"],"sagas":[{"name":"ops","subject":"ops","steps":[]}]}`), 0o600))
	code, out = natsaga(t, url, "register", bad)
	require.Equal(t, 2, code)
	// What the file holds is said, without the command's usage, which
	// the command line followed.
	require.Equal(t, "natsaga register: "+bad+`: definition "ops": field steps: no steps: a saga has at least one`+"\n", out)
}

// TestHelpOfTheModelCommands: register, outcomes and quiet take -h like
// every command, and describe their flags.
func TestHelpOfTheModelCommands(t *testing.T) {
	for name, flags := range map[string][]string{"register": nil, "outcomes": {"-o", "-ranked"}, "quiet": {"-wait"}} {
		var out, errOut bytes.Buffer
		code := mainCode([]string{name, "-h"}, func(string) string { return "" }, &out, &errOut)
		require.Equal(t, 0, code, "%s: %s", name, errOut.String())
		require.Contains(t, errOut.String(), "usage: natsaga [flags] "+name, name)
		for _, f := range flags {
			require.Contains(t, errOut.String(), f, name)
		}
	}
}

// TestInboxRefusedIsSaid runs the operator tool as the operator user of
// deploy/nats/auth.conf without its inbox prefix: the answer cannot reach
// it, and it says at once, not after -timeout (an hour here), that the
// server refused it a subject and what the user needs.
func TestInboxRefusedIsSaid(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{Config: "../../deploy/nats/single.conf", StoreDir: t.TempDir()})
	require.NoError(t, err)
	defer ns.Shutdown()
	refused := func(args ...string) string {
		t.Helper()
		// The connection's error logs are written to stderr from its own
		// goroutine, as to os.Stderr.
		var stdout bytes.Buffer
		var stderr testenv.SyncBuffer
		done := make(chan int, 1)
		go func() {
			done <- mainCode(append([]string{"-nats", ns.ClientURL(), "-timeout", "1h"}, args...), func(string) string { return "" }, &stdout, &stderr)
		}()
		select {
		case code := <-done:
			require.Equal(t, 1, code, stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("natsaga %v waits for an answer the server refused: %s", args, stderr.String())
		}
		return stderr.String()
	}
	out := refused("-user", "operator", "-password", "operator-demo", "summary")
	require.Contains(t, out, `natsaga: the server refused this user a subject: nats: permissions violation: Permissions Violation for Subscription to "_INBOX.`)
	require.Contains(t, out, "(a user of deploy/nats/auth.conf needs its -inbox-prefix, _INBOX_<user>)\n")

	var stdout bytes.Buffer
	var again testenv.SyncBuffer
	code := mainCode([]string{"-nats", ns.ClientURL(), "-user", "operator", "-password", "operator-demo", "-inbox-prefix", "_INBOX_operator",
		"-timeout", "1s", "summary"}, func(string) string { return "" }, &stdout, &again)
	require.Equal(t, 1, code, "no coordinator runs")
	require.NotContains(t, again.String(), "refused this user")
}
