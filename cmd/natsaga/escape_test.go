package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestPrintf escapes the text among printf's arguments, whatever its
// type, and nothing else: not the format, not numbers; an error's lines
// stay lines, indented.
func TestPrintf(t *testing.T) {
	type status string
	var b bytes.Buffer
	printf(&b, "%s\t%s|%s|%v|%d|%t\n", "a\tb", status("s\x1b"), json.RawMessage("{\"r\":\"\u009b\"}"), errors.New("e\r"), -7, true)
	printf(&b, "natsaga: %v\n", errors.Join(errors.New("one\x1b"), errors.New("natsaga: two")))
	require.Equal(t, "a\\tb\ts\\x1b|{\"r\":\"\\u009b\"}|e\\r|-7|true\n"+
		"natsaga: one\\x1b\n  natsaga: two\n", b.String())
}

// evil is what an agent, or anyone who may publish where agents answer,
// can put in a reason: a clear screen, a colour, a line of its own, a
// bell, DEL, a C1 CSI, a right-to-left override and a tab.
const evil = "\x1b[2J\x1b[31mEVIL\r\nline2\a\x7f\u009b\u202e\tend"

// evilShown is evil as natsaga prints it for people.
const evilShown = `\x1b[2J\x1b[31mEVIL\r\nline2\a\x7f\u009b\u202e\tend`

// TestOutsideTextIsEscaped: a reason, a note, a saga id in a stored
// event and a service's metadata reach the operator's terminal escaped in
// every table, while -json keeps them as they are.
func TestOutsideTextIsEscaped(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "pay", Role: "ops"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	testenv.Agent(t, url, participant.Options{Role: "ops", Steps: []agent.Step{
		{Saga: "ops", Name: "pay", Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				return nil, agent.Reject("%s", evil)
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil }}},
	}})
	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "ops", messages.Context{}.MustSet("who", "h\x1b[31mRED\u0085"))
	x := testenv.WaitStatus(t, nc, id, saga.RolledBack)
	require.Equal(t, "step pay failed: "+evil, x.Error, "the reason as the agent gave it")

	shown := "step pay failed: " + evilShown

	code, out := natsaga(t, url, "status", id)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "\nerror            "+shown+"\n"+
		`context          {"who":"h\u001b[31mRED\u0085"}`+"\n", out)
	require.Contains(t, out, "\n0     compensating  -     -        -        "+shown+"\n"+
		"0     rolled_back   -     -        -        "+shown+"\n", out)

	code, out = natsaga(t, url, "list", "-status", "rolled_back")
	require.Equal(t, 0, code, out)
	require.Equal(t, "SAGA_ID                               TYPE  STATUS       STEP  STARTED  ERROR\n"+
		id+"  ops   rolled_back  -     0        "+shown+"\n1 saga\n", out)

	code, out = natsaga(t, url, "events", "-all", "-status", "rolled_back")
	require.Equal(t, 0, code, out)
	require.Equal(t, "TICK    SAGA_ID                               TYPE        STATUS         REASON\n"+
		"0       "+id+"  ops         rolled_back    "+shown+"\n", out)

	code, out = natsaga(t, url, "outcomes")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "SAGA_ID                               TYPE  RANK  STATUS       START  END  COMPLETED  REASON\n"+
		id+"  ops   0     rolled_back  0      0    -          "+shown+"\n", out)

	// With -json, the JSON encoder's escapes, and the reason as it is.
	code, out = natsaga(t, url, "-json", "events", "-all", "-status", "rolled_back")
	require.Equal(t, 0, code, out)
	var ev messages.Event
	require.NoError(t, json.Unmarshal([]byte(out), &ev), out)
	require.Equal(t, "step pay failed: "+evil, ev.Reason)

	// A saga id no coordinator would take, in an event batch someone
	// else wrote to the event stream.
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	batch, err := json.Marshal(messages.EventBatch{V: messages.BatchVersion, Events: []messages.Event{
		{V: messages.Version, SagaID: "G3\x1b[2K\r", Saga: "ops", Status: "failed", Tick: 9, Reason: evil}}})
	require.NoError(t, err)
	_, err = js.Publish(context.Background(), messages.EventLogSubject("ops", "failed"), batch)
	require.NoError(t, err)
	code, out = natsaga(t, url, "events", "-n", "1")
	require.Equal(t, 0, code, out)
	require.Equal(t, "TICK    SAGA_ID                               TYPE        STATUS         REASON\n"+
		`9       G3\x1b[2K\r                           ops         failed         `+evilShown+"\n", out)

	// A service's metadata, which any service may announce.
	svc, err := micro.AddService(nc, micro.Config{Name: "natsaga-agent", Version: "3.0.0",
		Metadata: map[string]string{"role": "ops\x1b[8m", "pid": "1\r\n2"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	code, out = natsaga(t, url, "services")
	require.Equal(t, 0, code, out)
	require.Regexp(t, `(?m)^natsaga-agent\s+`+svc.Info().ID+`\s+3\.0\.0\s+ops\\x1b\[8m\s+-\s+-\s+1\\r\\n2\s+-\s+\[\]$`, out)
}

// TestPrintTick: the tick line counts every saga the tick timed out, not
// only the 1,000 its answer names.
func TestPrintTick(t *testing.T) {
	thousand := make([]string, 1000)
	for _, tc := range []struct {
		ack   messages.TickAck
		asked int64
		want  string
	}{
		{messages.TickAck{Tick: 3}, 3, "tick 3\n"},
		{messages.TickAck{Tick: 5}, 3, "tick 5 (the clock was past tick 3 already: it does not go back)\n"},
		{messages.TickAck{Tick: 3, Expired: []string{"a"}, ExpiredCount: 1}, 3, "tick 3: 1 saga timed out\n"},
		{messages.TickAck{Tick: 3, Expired: thousand, ExpiredCount: 1500}, 3, "tick 3: 1500 sagas timed out\n"},
		{messages.TickAck{Tick: 3, Expired: []string{"a", "b"}}, 3, "tick 3: 2 sagas timed out\n"}, // a coordinator that counts none
	} {
		var b bytes.Buffer
		printTick(&b, &tc.ack, tc.asked)
		require.Equal(t, tc.want, b.String())
	}
}

// TestStartedAt: a saga's status says the tick it started at, or, for one
// scheduled that has not started, or never will (aborted before its
// tick), the tick it was scheduled for.
func TestStartedAt(t *testing.T) {
	tr := func(ss ...saga.Status) []saga.Transition {
		var h []saga.Transition
		for _, s := range ss {
			h = append(h, saga.Transition{Status: s})
		}
		return h
	}
	for _, tc := range []struct {
		x    saga.Execution
		want string
	}{
		{saga.Execution{Status: saga.Pending, StartedTick: 9, History: tr(saga.Pending)}, `^scheduled for tick +9$`},
		{saga.Execution{Status: saga.RolledBack, StartedTick: 9, History: tr(saga.Pending, saga.RolledBack)}, `^scheduled for tick +9 \(never started\)$`},
		{saga.Execution{Status: saga.RolledBack, StartedTick: 9, History: tr(saga.Pending, saga.InProgress, saga.Compensating, saga.RolledBack)}, `^started at tick +9$`},
		{saga.Execution{Status: saga.Completed, StartedTick: 2, History: tr(saga.InProgress, saga.Completed)}, `^started at tick +2$`},
		{saga.Execution{Status: saga.Completed, StartedTick: 2, History: tr(saga.Pending, saga.Completed), HistoryDropped: 3}, `^started at tick +2$`},
	} {
		// The line as printStatus prints it, in a table of its own.
		data, err := json.Marshal(tc.x)
		require.NoError(t, err)
		var b bytes.Buffer
		printStatus(&b, data)
		line := ""
		for l := range strings.Lines(b.String()) {
			if strings.HasPrefix(l, "started at tick") || strings.HasPrefix(l, "scheduled for tick") {
				line = strings.TrimSuffix(l, "\n")
			}
		}
		require.Regexp(t, tc.want, line, b.String())
	}
}

// TestPrintAbort: an abort says what it did, and that it did nothing to a
// saga compensating already.
func TestPrintAbort(t *testing.T) {
	for _, tc := range []struct {
		a    client.Aborted
		want string
	}{
		{client.Aborted{Status: saga.Compensating}, "aborted: the saga is compensating its completed steps, and the one in flight\n"},
		{client.Aborted{Status: saga.RolledBack}, "aborted: the saga is rolled_back\n"},
		{client.Aborted{Status: saga.Compensating, Unchanged: true}, "not aborted: the saga is compensating already, and keeps its reason\n"},
	} {
		var b bytes.Buffer
		printAbort(&b, tc.a)
		require.Equal(t, tc.want, b.String())
	}
}
