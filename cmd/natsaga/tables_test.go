package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// opsSystem runs a coordinator and an agent for a two-step saga whose
// second step refuses a context with "refuse", and returns the URL.
func opsSystem(t *testing.T) string {
	t.Helper()
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "reserve", Role: "ops"}, {Name: "confirm", Role: "ops"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	ok := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	undo := func(context.Context, agent.Tx, *messages.Command) error { return nil }
	testenv.Agent(t, url, participant.Options{Role: "ops", Name: "ops-1", Metadata: map[string]string{"metrics": "127.0.0.1:9464"}, Steps: []agent.Step{
		{Saga: "ops", Name: "reserve", Handler: agent.Handler{Execute: ok, Compensate: undo}},
		{Saga: "ops", Name: "confirm", Handler: agent.Handler{
			Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				if _, no := cmd.Context["refuse"]; no {
					return nil, agent.Reject("refused")
				}
				return nil, nil
			}, Compensate: undo}},
	}})
	return url
}

// lines returns the non-empty lines of s.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestTables prints the answers as tables by default, lists sagas of any
// status, finished ones included, and prints the latest events.
func TestTables(t *testing.T) {
	url := opsSystem(t)
	nc := testenv.Connect(t, url)
	var ids []string
	for i := range 4 {
		ctx := messages.Context{}
		if i%2 == 1 {
			ctx.MustSet("refuse", true)
		}
		id := testenv.Start(t, nc, "ops", ctx)
		want := saga.Completed
		if i%2 == 1 {
			want = saga.RolledBack
		}
		testenv.WaitStatus(t, nc, id, want)
		ids = append(ids, id)
	}

	code, out := natsaga(t, url, "summary")
	require.Equal(t, 0, code, out)
	require.Regexp(t, `(?m)^completed\s+2$`, out)
	require.Regexp(t, `(?m)^rolled back\s+2$`, out)
	require.Regexp(t, `(?m)^active\s+0\s`, out)
	require.Regexp(t, `(?m)^due\s+0\s`, out)
	// Two answers for each saga that completed, three for each rolled
	// back (its second step refused, its first compensated).
	require.Regexp(t, `(?m)^answered\s+10\s`, out)

	code, out = natsaga(t, url, "list", "-status", "completed")
	require.Equal(t, 0, code, out)
	ls := lines(out)
	require.Len(t, ls, 4, out) // header, two sagas, count
	require.Regexp(t, `^SAGA_ID\s+TYPE\s+STATUS\s+STEP\s+STARTED\s+ERROR$`, ls[0])
	require.Regexp(t, `^`+ids[0]+`\s+ops\s+completed\s+-\s+0\s+-$`, ls[1])
	require.Regexp(t, `^`+ids[2]+`\s+ops\s+completed\s`, ls[2])
	require.Equal(t, "2 sagas", ls[3], "all there are, nothing more said")
	code, out = natsaga(t, url, "list", "-status", "rolled_back", "-limit", "1")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, ids[3])
	require.NotContains(t, out, ids[1], "only the latest one")
	require.Contains(t, out, "\n1 saga (the latest; more are stored: -limit asks for up to 1000, and summary counts them)\n")
	code, out = natsaga(t, url, "list", "-status", "rolled_back", "-limit", "2")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "\n2 sagas\n", "all there are, nothing more said")

	code, out = natsaga(t, url, "status", ids[1])
	require.Equal(t, 0, code, out)
	require.Regexp(t, `(?m)^status\s+rolled_back$`, out)
	require.Regexp(t, `(?m)^compensated steps\s+reserve$`, out)
	require.Regexp(t, `(?m)^0\s+in_progress\s+confirm\s+execute\s+1\s`, out)

	// The latest two events, as the table and as JSON; the same two as
	// the end of all of them.
	code, all := natsaga(t, url, "-json", "events", "-all")
	require.Equal(t, 0, code, all)
	allLines := lines(all)
	require.Len(t, allLines, 10, "in_progress and an end for each of 4 sagas, compensating for 2")
	code, last := natsaga(t, url, "events", "-json", "-n", "2")
	require.Equal(t, 0, code, last)
	require.Equal(t, allLines[8:], lines(last))
	code, out = natsaga(t, url, "events", "-n", "1", "-status", "rolled_back")
	require.Equal(t, 0, code, out)
	ls = lines(out)
	require.Len(t, ls, 2, out)
	require.Regexp(t, `^TICK\s+SAGA_ID\s+TYPE\s+STATUS\s+REASON$`, ls[0])
	require.Regexp(t, `^0\s+`+ids[3]+`\s+ops\s+rolled_back\s+step confirm failed: refused$`, ls[1])
	var ev messages.Event
	require.NoError(t, json.Unmarshal([]byte(allLines[9]), &ev))
	require.Equal(t, ids[3], ev.SagaID)

	code, out = natsaga(t, url, "services")
	require.Equal(t, 0, code, out)
	pid := strconv.Itoa(os.Getpid()) // both run in this process
	require.Regexp(t, `(?m)^natsaga-coordinator\s+\S+\s+3\.1\.0\s+active\s+-\s+[0-9A-Za-z]{22}\s+`+pid+`\s+-\s+\[start starts tick status summary list retry abort register\]$`, out)
	require.Regexp(t, `(?m)^natsaga-agent\s+\S+\s+3\.1\.0\s+ops\s+false\s+ops-1\s+`+pid+`\s+127\.0\.0\.1:9464\s+\[stats\]$`, out)
	require.True(t, strings.HasSuffix(out, "\n2 services\n"), out)

	// An error answer: to stderr, exit 1.
	code, out = natsaga(t, url, "retry", ids[0])
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "natsaga: conflict: ")
}

// TestHelpEverywhere: -h works on the tool and on every command, exits 0,
// and never prints the password given in the environment.
func TestHelpEverywhere(t *testing.T) {
	getenv := func(k string) string {
		if k == "NATS_PASSWORD" {
			return "s3cret-pw"
		}
		return ""
	}
	for _, args := range [][]string{{"-h"}, {"summary", "-h"}, {"status", "-h"}, {"list", "-h"}, {"retry", "-h"},
		{"start", "-h"}, {"tick", "-h"}, {"events", "-h"}, {"services", "-h"}, {"register", "-h"}, {"outcomes", "-h"}, {"quiet", "-h"}} {
		var out, errOut bytes.Buffer
		code := mainCode(args, getenv, &out, &errOut)
		require.Equal(t, 0, code, "%v: %s", args, errOut.String())
		require.Contains(t, errOut.String(), "usage: natsaga", "%v", args)
		if len(args) == 2 {
			require.Contains(t, errOut.String(), "natsaga [flags] "+args[0], "%v", args)
		}
		require.NotContains(t, errOut.String()+out.String(), "s3cret-pw", "%v", args)
		if len(args) == 1 {
			// What TestConnectWaitIsKept measures.
			require.Contains(t, errOut.String(), "reach the NATS server at start (default -timeout)")
		}
	}
}

// TestWrongURL fails within its timeout, saying why.
func TestWrongURL(t *testing.T) {
	done := make(chan struct{})
	var code int
	var out, errOut bytes.Buffer
	go func() {
		defer close(done)
		code = mainCode([]string{"-nats", "nats://127.0.0.1:1", "-timeout", "2s", "summary"}, func(string) string { return "" }, &out, &errOut)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("natsaga did not give up on a wrong URL")
	}
	require.Equal(t, 1, code)
	require.Regexp(t, `msg="waiting for the NATS server" process=natsaga pid=\d+ url=nats://127.0.0.1:1`, errOut.String(), "said after a second")
	require.Contains(t, errOut.String(), "connect to nats://127.0.0.1:1")
	require.Contains(t, errOut.String(), "connection refused")
}

// TestConnectionFlagsNoServerCouldTake exit 2 at once, as any bad usage,
// where a server not there exits 1 (TestWrongURL).
func TestConnectionFlagsNoServerCouldTake(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.creds")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-nats", "://x"}, "the URL does not parse"},
		{[]string{"-nats", "ftp://x:1"}, `connect to ftp://x:1: scheme "ftp": a NATS URL is nats://, tls://, ws:// or wss://`},
		{[]string{"-nats", "nats://127.0.0.1:1, http://u:secret@h:1"}, `scheme "http"`},
		{[]string{"-nats", "nats://127.0.0.1:99999"}, "invalid port"},
		{[]string{"-connect-wait", "-1s"}, "-connect-wait -1s: must not be negative"},
		{[]string{"-creds", missing}, "no such file or directory"},
		{[]string{"-user", "a", "-creds", missing}, "exclude each other"},
	} {
		var out, errOut bytes.Buffer
		code := mainCode(append(tc.args, "-timeout", "1m", "summary"), func(string) string { return "" }, &out, &errOut)
		require.Equal(t, 2, code, "%v: %s", tc.args, errOut.String())
		require.Contains(t, errOut.String(), tc.want, tc.args)
	}
}

// TestConnectWaitIsKept: -connect-wait, given, is how long the tool
// keeps trying to reach the server, even beyond -timeout; without it, the
// tool waits -timeout.
func TestConnectWaitIsKept(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		atLeast  time.Duration
		lessThan time.Duration
	}{
		{[]string{"-timeout", "300ms", "-connect-wait", "1500ms"}, 1500 * time.Millisecond, 30 * time.Second},
		// Well under the default -connect-wait of 30 s, with room for a
		// loaded machine.
		{[]string{"-timeout", "300ms"}, 300 * time.Millisecond, 10 * time.Second},
	} {
		var out, errOut bytes.Buffer
		began := time.Now()
		code := mainCode(append(append([]string{"-nats", "nats://127.0.0.1:1"}, tc.args...), "summary"), func(string) string { return "" }, &out, &errOut)
		took := time.Since(began)
		require.Equal(t, 1, code, "%v", tc.args)
		require.Contains(t, errOut.String(), "connection refused", "%v", tc.args)
		require.GreaterOrEqual(t, took, tc.atLeast, "%v", tc.args)
		require.Less(t, took, tc.lessThan, "%v", tc.args)
	}
}

// TestStatusSaysTransitionsDropped prints a saga whose history was held
// to its bounds: the header says how many transitions are not shown.
func TestStatusSaysTransitionsDropped(t *testing.T) {
	x := saga.Execution{ID: "s-1", Saga: "ops", Status: saga.InProgress, Current: 0, HistoryDropped: 2046,
		History: []saga.Transition{{Tick: 0, Status: saga.Pending}, {Tick: 9, Status: saga.InProgress, Step: "reserve", Action: messages.Execute, Attempt: 1024}}}
	data, err := json.Marshal(x)
	require.NoError(t, err)
	var out bytes.Buffer
	printStatus(&out, data)
	require.Contains(t, out.String(), "\nhistory (2046 earlier transitions dropped after the first):\n")
}

// TestListHint: a list says when the coordinator holds more than it
// listed, and why: -limit, the most the coordinator answers, or what fits
// one answer.
func TestListHint(t *testing.T) {
	require.Equal(t, coordinator.DefaultFinishedList, defaultFinished)
	require.Equal(t, coordinator.MaxFinishedList, maxFinished)
	const full = " (the latest; more are stored: -limit asks for up to 1000, and summary counts them)"
	for _, tc := range []struct {
		status   saga.Status
		limit, n int
		more     bool
		want     string
	}{
		{saga.Completed, 0, 100, true, full},
		{saga.Completed, 0, 100, false, ""},
		{saga.Completed, 0, 99, false, ""},
		{saga.RolledBack, 1, 1, true, full},
		{saga.TimedOut, 1000, 1000, true, " (the latest 1000, the most the coordinator answers; more are stored: summary counts them)"},
		{saga.Completed, 5000, 1000, true, " (the latest 1000, the most the coordinator answers, not the 5000 asked; more are stored: summary counts them)"},
		{saga.Completed, 5000, 999, false, ""},
		{saga.RolledBack, 1000, 738, true, " (the latest that fit one answer of the coordinator; more are stored: summary counts them)"},
		{saga.RolledBack, 5000, 738, true, " (the latest that fit one answer of the coordinator; more are stored: summary counts them)"},
		{saga.Failed, 5, 5, true, " (more are held: -limit 0 lists them all)"},
		{saga.Failed, 0, 100, false, ""},
		{saga.InProgress, 5, 5, true, " (more are held: -limit 0 lists them all)"},
		{"", 0, 100, false, ""},
	} {
		require.Equal(t, tc.want, listHint(tc.status, tc.limit, tc.n, tc.more), "%+v", tc)
	}
}

// TestLogLinesNameTheProcess: natsaga's log lines carry process and pid,
// as every natsaga program's do (docs/observe.md, "Logs").
func TestLogLinesNameTheProcess(t *testing.T) {
	var out, errOut bytes.Buffer
	code := mainCode([]string{"-nats", "nats://127.0.0.1:1", "-timeout", "1500ms", "-log-format", "json", "summary"},
		func(string) string { return "" }, &out, &errOut)
	require.Equal(t, 1, code)
	logged := 0
	for line := range strings.Lines(errOut.String()) {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var l struct {
			Process string `json:"process"`
			PID     int    `json:"pid"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &l), line)
		require.Equal(t, "natsaga", l.Process, line)
		require.Equal(t, os.Getpid(), l.PID, line)
		logged++
	}
	require.NotZero(t, logged, errOut.String())
}
