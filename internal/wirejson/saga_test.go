package wirejson_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// requireSameJSON checks that AppendJSON writes exactly what json.Marshal
// writes for x, and that DecodeExecution reads it back as json.Unmarshal
// does.
func requireSameJSON(t *testing.T, x *saga.Execution) {
	t.Helper()
	want, err := json.Marshal(x)
	require.NoError(t, err)
	got, err := wirejson.AppendExecution([]byte("prefix"), x)
	require.NoError(t, err)
	require.Equal(t, "prefix"+string(want), string(got))
	line := x.Outcome()
	wantLine, err := json.Marshal(&line)
	require.NoError(t, err)
	gotLine, err := wirejson.AppendOutcomeLine([]byte("prefix"), &line)
	require.NoError(t, err)
	require.Equal(t, "prefix"+string(wantLine), string(gotLine))
	var back saga.Execution
	require.NoError(t, json.Unmarshal(want, &back))
	read, err := wirejson.DecodeExecution(want)
	require.NoError(t, err)
	requireSameExecution(t, back, read)
	// Read as a report of ended sagas reads it: the same outcome line,
	// with no step results and the last transition only.
	ended, err := wirejson.DecodeEnded(want)
	require.NoError(t, err)
	require.Equal(t, read.Outcome(), ended.Outcome())
	require.Nil(t, ended.Results)
	if n := len(read.History); n > 0 {
		require.Equal(t, read.History[n-1:], ended.History)
	} else {
		require.Equal(t, read.History, ended.History)
	}
}

// TestAppendJSONMatchesEncodingJSON encodes sagas at every point of their
// life, as the engine leaves them, and odd ones built by hand.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	e := saga.New(saga.Options{})
	require.NoError(t, e.Register(subsidyDef()))
	var out saga.Outbox
	seen := 0
	check := func() {
		for _, x := range out.Changed {
			requireSameJSON(t, x)
			seen++
		}
		out.Reset()
	}
	reply := func(i int, outcome messages.Outcome, reason string, output messages.Context) {
		r := messages.ReplyTo(&out.Commands[i], outcome, reason)
		r.Output = output
		out.Reset()
		require.NoError(t, e.ApplyReply(r, t0, &out))
	}

	// A saga that completes.
	_, err := e.Start("ok-1", "subsidy", messages.Context{"h": json.RawMessage(`"h-1"`), "n": json.RawMessage(` 5 `)}, &out)
	require.NoError(t, err)
	cmds := append([]messages.Command(nil), out.Commands...)
	check()
	for _, step := range []string{"a", "b", "c"} {
		out.Commands = cmds
		reply(0, messages.OK, "", messages.Context{step: json.RawMessage(`{"x": [1, "\u2028"]}`)})
		cmds = append([]messages.Command(nil), out.Commands...)
		check()
	}

	// A saga that fails at its second step, retries a transient error of a
	// compensation, and ends failed after its attempts.
	_, err = e.Start("e-1", "subsidy", nil, &out)
	require.NoError(t, err)
	cmds = append([]messages.Command(nil), out.Commands...)
	check()
	out.Commands = cmds
	reply(0, messages.OK, "", nil)
	cmds = append([]messages.Command(nil), out.Commands...)
	check()
	out.Commands = cmds
	reply(0, messages.Failed, "budget \"insufficient\"\n", nil)
	cmds = append([]messages.Command(nil), out.Commands...)
	check()
	now := t0
	for range 10 {
		if len(cmds) == 0 {
			break
		}
		out.Commands = cmds
		reply(0, messages.Error, "down", nil)
		check()
		now = now.Add(time.Hour)
		e.Wake(now, &out)
		cmds = append([]messages.Command(nil), out.Commands...)
		check()
	}
	require.Positive(t, seen)

	// Fields the engine leaves empty, and nil lists.
	requireSameJSON(t, &saga.Execution{})
	requireSameJSON(t, &saga.Execution{ID: "x", Completed: []string{}, History: []saga.Transition{}, Compensated: []string{"a"},
		Results: map[string]messages.Context{"b": nil, "a": {}}, RetryAt: time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.FixedZone("x", 3600)),
		Awaiting: true, Cause: saga.TimedOut, Error: "\xff", Action: messages.Compensate, Attempt: 2, Current: -1})
	requireSameJSON(t, &saga.Execution{ID: "<y&z>", Saga: "s\u2028", Status: saga.RolledBack, Rank: 7, Error: `budget "<short>" & gone`,
		Context: messages.Context{"z": json.RawMessage(` [ 1 , {"b" : "<\u0026>"} ] `), "a": json.RawMessage(`"\u2029"`)},
		History: []saga.Transition{{Tick: 3}, {Tick: 9, Status: saga.RolledBack}}})
}

func TestAppendJSONRefusesWhatEncodingJSONRefuses(t *testing.T) {
	for _, x := range []saga.Execution{
		{Context: messages.Context{"k": json.RawMessage(`{`)}},
		{Results: map[string]messages.Context{"s": {"k": json.RawMessage(`nul`)}}},
		{RetryAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		_, wantErr := json.Marshal(&x)
		require.Error(t, wantErr)
		_, err := wirejson.AppendExecution(nil, &x)
		require.Error(t, err)
	}
}

// storedSaga is a subsidy saga after its second step, as the coordinator
// stores it.
func storedSaga(b testing.TB) *saga.Execution {
	e := saga.New(saga.Options{})
	require.NoError(b, e.Register(subsidyDef()))
	var out saga.Outbox
	_, err := e.Start("", "subsidy", messages.Context{"customer": json.RawMessage(`"c-1"`), "amount": json.RawMessage(`12345`)}, &out)
	require.NoError(b, err)
	for range 2 {
		r := messages.ReplyTo(&out.Commands[0], messages.OK, "")
		r.Output = messages.Context{out.Commands[0].Step + "_done": json.RawMessage(`true`)}
		out.Reset()
		require.NoError(b, e.ApplyReply(r, t0, &out))
	}
	return out.Changed[0]
}

func BenchmarkExecutionEncoding(b *testing.B) {
	x := storedSaga(b)
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(x)
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			buf, _ = wirejson.AppendExecution(buf[:0], x)
		}
	})
}

// t0 is the wall-clock time the sagas of these tests start at.
var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// subsidyDef is a three-step saga like flood's subsidy.
func subsidyDef() saga.Definition {
	return saga.Definition{
		Name: "subsidy_application", Subject: "subsidy",
		Steps: []saga.Step{
			{Name: "household_applies", Role: "household", Compensation: "cancel_application"},
			{Name: "government_evaluates", Role: "government", Compensation: "undo_approval"},
			{Name: "budget_deducted", Role: "government", Compensation: "refund_budget"},
		},
	}
}

// BenchmarkExecutionDecoding reads a stored saga back, as a restarted
// coordinator and a run's report read every one.
func BenchmarkExecutionDecoding(b *testing.B) {
	data, err := json.Marshal(storedSaga(b))
	require.NoError(b, err)
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			var x saga.Execution
			if err := json.Unmarshal(data, &x); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodeExecution", func(b *testing.B) {
		for b.Loop() {
			if _, err := wirejson.DecodeExecution(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestOutcomeLogWithAppendOutcomeLine writes the log of more sagas than
// one goroutine encodes with AppendOutcomeLine, side by side: the same
// bytes as encoding/json's.
func TestOutcomeLogWithAppendOutcomeLine(t *testing.T) {
	x := storedSaga(t)
	xs := make([]saga.Execution, 10_000)
	for i := range xs {
		xs[i] = *x
		xs[i].ID = saga.ID(fmt.Sprintf("s-%05d", (i*7919)%len(xs)))
	}
	want, wantDigest, err := saga.OutcomeLog(xs)
	require.NoError(t, err)
	got, digest, err := saga.OutcomeLogWith(xs, wirejson.AppendOutcomeLine)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
	require.Equal(t, wantDigest, digest)
}

// BenchmarkOutcomeLog writes the outcome log of 1,000 stored sagas, each
// line with encoding/json and with AppendOutcomeLine, and of 100,000 with
// AppendOutcomeLine, which saga.OutcomeLogWith encodes on every core.
func BenchmarkOutcomeLog(b *testing.B) {
	x := storedSaga(b)
	sagas := func(n int) []saga.Execution {
		xs := make([]saga.Execution, n)
		for i := range xs {
			xs[i] = *x
			xs[i].ID = saga.ID(fmt.Sprintf("s-%06d", (i*7919)%n))
		}
		return xs
	}
	xs := sagas(1000)
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := saga.OutcomeLog(xs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendOutcomeLine", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := saga.OutcomeLogWith(xs, wirejson.AppendOutcomeLine); err != nil {
				b.Fatal(err)
			}
		}
	})
	many := sagas(100_000)
	b.Run("AppendOutcomeLine/100000", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := saga.OutcomeLogWith(many, wirejson.AppendOutcomeLine); err != nil {
				b.Fatal(err)
			}
		}
	})
}
