package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/messages"
)

func TestDecide(t *testing.T) {
	ok := &messages.Result{Outcome: messages.OK}
	failed := &messages.Result{Outcome: messages.Failed, Reason: "no"}
	pending := &messages.Result{Pending: true}
	noop := &messages.Result{Outcome: messages.OK, Noop: true}
	ex, co := messages.Execute, messages.Compensate
	for _, tc := range []struct {
		name   string
		rec    messages.Record
		action messages.Action
		want   agent.Decision
	}{
		{"first execute runs", messages.Record{}, ex, agent.Run},
		{"claimed execute runs again", messages.Record{Execute: pending}, ex, agent.Run},
		{"executed execute is answered", messages.Record{Execute: ok}, ex, agent.Answer},
		{"rejected execute is answered", messages.Record{Execute: failed}, ex, agent.Answer},
		{"execute after a no-op compensation is refused", messages.Record{Compensate: noop}, ex, agent.Refuse},
		{"execute after a compensation is refused", messages.Record{Execute: ok, Compensate: ok}, ex, agent.Refuse},
		{"execute after a claimed compensation is refused", messages.Record{Execute: ok, Compensate: pending}, ex, agent.Refuse},
		{"compensation without execute has nothing to undo", messages.Record{}, co, agent.NothingToUndo},
		{"compensation of a rejected execute has nothing to undo", messages.Record{Execute: failed}, co, agent.NothingToUndo},
		{"compensation of a pending execute waits", messages.Record{Execute: pending}, co, agent.Wait},
		{"compensation of an executed step runs", messages.Record{Execute: ok}, co, agent.Run},
		{"claimed compensation runs again", messages.Record{Execute: ok, Compensate: pending}, co, agent.Run},
		{"done compensation is answered", messages.Record{Execute: ok, Compensate: ok}, co, agent.Answer},
		{"no-op compensation is answered", messages.Record{Compensate: noop}, co, agent.Answer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, agent.Decide(tc.rec, tc.action), "got %v", agent.Decide(tc.rec, tc.action))
		})
	}
}

func TestWriteFound(t *testing.T) {
	out := messages.Context{"debited": []byte(`{"cents": 12, "to": "h1"}`)}
	for _, tc := range []struct {
		name     string
		recorded *messages.Result
		output   messages.Context
		want     bool
	}{
		{"OK with the output written: the other run found the write", &messages.Result{Outcome: messages.OK, Output: messages.Context{"debited": []byte(`{"cents":12,"to":"h1"}`)}}, out, true},
		{"OK with no output, none written", &messages.Result{Outcome: messages.OK}, nil, true},
		{"OK with an empty output, none written", &messages.Result{Outcome: messages.OK, Output: messages.Context{}}, nil, true},
		{"a rejection was reached without the write", &messages.Result{Outcome: messages.Failed, Reason: "insufficient balance"}, out, false},
		{"a rejection with no output either", &messages.Result{Outcome: messages.Failed}, nil, false},
		{"OK with another output was reached without it", &messages.Result{Outcome: messages.OK, Output: messages.Context{"debited": []byte(`{"cents":13,"to":"h1"}`)}}, out, false},
		{"OK with another key", &messages.Result{Outcome: messages.OK, Output: messages.Context{"credited": []byte(`{"cents":12,"to":"h1"}`)}}, out, false},
		{"OK with nothing where the write named an output", &messages.Result{Outcome: messages.OK}, out, false},
		{"no result", nil, out, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, agent.WriteFound(tc.recorded, tc.output))
		})
	}
}

func TestConclude(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ex := &messages.Command{SagaID: "s1", Saga: "sub", Step: "pay", Action: messages.Execute, Seq: 3}
	co := &messages.Command{SagaID: "s1", Saga: "sub", Step: "pay", Action: messages.Compensate, Seq: 7}
	out := messages.Context{}.MustSet("paid", 5)
	transient := errors.New("disk on fire")
	long := strings.Repeat("é", messages.MaxReason) // 2 bytes a letter
	clipped := messages.ClipReason(long)
	const limit = 40
	big := messages.Context{"blob": json.RawMessage(`"` + strings.Repeat("x", limit-10) + `"`)} // {"blob":"x…"}: 41 bytes
	fits := messages.Context{"blob": json.RawMessage(`"` + strings.Repeat("x", limit-11) + `"`)}
	for _, tc := range []struct {
		name    string
		cmd     *messages.Command
		out     messages.Context
		err     error
		claimed bool
		want    agent.Conclusion
	}{
		{"success records OK and keeps the writes", ex, out, nil, false,
			agent.Conclusion{Result: &messages.Result{Outcome: messages.OK, Output: out, Seq: 3, At: at}, Keep: true}},
		{"successful compensation records OK", co, nil, nil, true,
			agent.Conclusion{Result: &messages.Result{Outcome: messages.OK, Seq: 7, At: at}, Keep: true}},
		{"rejected execute records Failed and drops the writes", ex, nil, agent.Reject("budget %d", 0), false,
			agent.Conclusion{Result: &messages.Result{Outcome: messages.Failed, Reason: "budget 0", Seq: 3, At: at}}},
		{"claimed rejected execute records Failed", ex, nil, agent.Reject("no"), true,
			agent.Conclusion{Result: &messages.Result{Outcome: messages.Failed, Reason: "no", Seq: 3, At: at}}},
		{"rejected compensation records nothing", co, nil, agent.Reject("not yet"), false,
			agent.Conclusion{Reply: messages.ReplyTo(co, messages.Failed, "not yet")}},
		{"transient execute records nothing", ex, nil, transient, false,
			agent.Conclusion{Reply: messages.ReplyTo(ex, messages.Error, "disk on fire")}},
		{"transient claimed execute is delivered again", ex, nil, transient, true,
			agent.Conclusion{Redeliver: true}},
		{"transient claimed compensation replies Error", co, nil, transient, true,
			agent.Conclusion{Reply: messages.ReplyTo(co, messages.Error, "disk on fire")}},
		// A reason is kept to what the saga keeps: the record and the
		// reply then fit what the coordinator takes.
		{"a long rejection is cut", ex, nil, agent.Reject("%s", long), false,
			agent.Conclusion{Result: &messages.Result{Outcome: messages.Failed, Reason: clipped, Seq: 3, At: at}}},
		{"a long rejection of a compensation is cut", co, nil, agent.Reject("%s", long), false,
			agent.Conclusion{Reply: messages.ReplyTo(co, messages.Failed, clipped)}},
		{"a long error is cut", ex, nil, errors.New(long), false,
			agent.Conclusion{Reply: messages.ReplyTo(ex, messages.Error, clipped)}},
		// An output no record could hold fails as a transient error.
		{"an output at its bound is recorded", ex, fits, nil, false,
			agent.Conclusion{Result: &messages.Result{Outcome: messages.OK, Output: fits, Seq: 3, At: at}, Keep: true}},
		{"an output over its bound is an error", ex, big, nil, false,
			agent.Conclusion{Reply: messages.ReplyTo(ex, messages.Error,
				"execute pay: output of 41 bytes as JSON, more than 40 (an eighth of the server's payload limit, less 1 KiB): "+messages.ErrTooLarge.Error())}},
		{"an output that is not JSON is an error", ex, messages.Context{"b": json.RawMessage(`{`), "a": json.RawMessage(`1x`)}, nil, false,
			agent.Conclusion{Reply: messages.ReplyTo(ex, messages.Error, `execute pay: output "a": not JSON in UTF-8: `+messages.ErrBadRequest.Error())}},
		{"a claimed execute's bad output is delivered again", ex, big, nil, true,
			agent.Conclusion{Redeliver: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, agent.Conclude(tc.cmd, tc.out, tc.err, tc.claimed, at, limit))
		})
	}
	encoded, err := json.Marshal(fits)
	require.NoError(t, err)
	require.Len(t, encoded, limit, "the bound counts the output as JSON")
}

func TestIsReject(t *testing.T) {
	reason, ok := agent.IsReject(agent.Reject("short by %d", 3))
	require.True(t, ok)
	require.Equal(t, "short by 3", reason)
	reason, ok = agent.IsReject(errors.Join(errors.New("x"), agent.Reject("wrapped")))
	require.True(t, ok)
	require.Equal(t, "wrapped", reason)
	_, ok = agent.IsReject(errors.New("plain"))
	require.False(t, ok)
	_, ok = agent.IsReject(nil)
	require.False(t, ok)

	// A rejection with no reason still answers one: a failed reply without
	// it is malformed, and a rejected compensation would wait for ever.
	reason, ok = agent.IsReject(agent.Reject(""))
	require.True(t, ok)
	require.Equal(t, agent.NoReason, reason)
	co := &messages.Command{V: 1, SagaID: "s-1", Saga: "pay", Step: "take", Action: messages.Compensate, Attempt: 1, Seq: 2}
	reply := agent.Conclude(co, nil, agent.Reject(""), false, time.Now(), 1<<10).Reply
	require.Equal(t, messages.Failed, reply.Outcome)
	require.NoError(t, reply.Validate())
}

// counter is a handler that adds the context's n to the value "total" and
// takes it away on compensation, rejecting an n below zero.
func counter(calls *int) agent.Handler {
	add := func(tx agent.Tx, n int64) error {
		var total int64
		if _, err := tx.Get("total", &total); err != nil {
			return err
		}
		return tx.Put("total", total+n)
	}
	return agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			*calls++
			n, _ := cmd.Context.Int64("n")
			if n < 0 {
				if err := add(tx, n); err != nil {
					return nil, err
				}
				return nil, agent.Reject("negative %d", n)
			}
			return messages.Context{}.MustSet("added", n), add(tx, n)
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			*calls++
			n, _ := cmd.Context.Int64("n")
			return add(tx, -n)
		},
	}
}

// TestMemoryAppliesTheRules runs command sequences through [agent.Memory]
// and checks each verdict, the handler's calls and the committed total.
func TestMemoryAppliesTheRules(t *testing.T) {
	type step struct {
		action  messages.Action
		n       int64
		verdict agent.Verdict
		outcome messages.Outcome
	}
	ex := func(n int64, v agent.Verdict, o messages.Outcome) step { return step{messages.Execute, n, v, o} }
	co := func(n int64, v agent.Verdict, o messages.Outcome) step { return step{messages.Compensate, n, v, o} }
	for _, tc := range []struct {
		name  string
		steps []step
		calls int
		total int64
	}{
		{"execute applies once", []step{ex(5, agent.Applied, messages.OK), ex(5, agent.Duplicate, messages.OK)}, 1, 5},
		{"compensation undoes once", []step{ex(5, agent.Applied, messages.OK), co(5, agent.Applied, messages.OK),
			co(5, agent.Duplicate, messages.OK), ex(5, agent.Refused, messages.Failed)}, 2, 0},
		{"compensation first is a no-op and refuses the execute", []step{co(5, agent.Noop, messages.OK),
			ex(5, agent.Refused, messages.Failed), co(5, agent.Duplicate, messages.OK)}, 0, 0},
		{"rejected execute drops its writes and its compensation has nothing to undo", []step{ex(-4, agent.Applied, messages.Failed),
			ex(-4, agent.Duplicate, messages.Failed), co(-4, agent.Noop, messages.OK)}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := agent.NewMemory()
			_, err := m.Init(t.Context(), "total", int64(0))
			require.NoError(t, err)
			calls := 0
			h := counter(&calls)
			for i, s := range tc.steps {
				cmd := &messages.Command{SagaID: "s1", Saga: "sum", Step: "add", Action: s.action, Seq: i + 1,
					Context: messages.Context{}.MustSet("n", s.n)}
				reply, v, err := m.Do(t.Context(), cmd, h)
				require.NoError(t, err)
				require.Equal(t, s.verdict, v, "command %d", i)
				require.Equal(t, s.outcome, reply.Outcome, "command %d", i)
			}
			require.Equal(t, tc.calls, calls)
			var total int64
			ok, err := m.Value("total", &total)
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, tc.total, total)
		})
	}
}

func TestMemoryTransientErrorRecordsNothing(t *testing.T) {
	m := agent.NewMemory()
	fail := true
	h := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
			var v int
			if _, err := tx.Get("k", &v); err != nil {
				return nil, err
			}
			if err := tx.Put("k", v+1); err != nil {
				return nil, err
			}
			if fail {
				return nil, errors.New("flaky")
			}
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	cmd := &messages.Command{SagaID: "s1", Saga: "x", Step: "y", Action: messages.Execute, Seq: 1}
	reply, v, err := m.Do(t.Context(), cmd, h)
	require.NoError(t, err)
	require.Equal(t, agent.Transient, v)
	require.Equal(t, messages.Error, reply.Outcome)
	require.Equal(t, messages.Record{}, m.Record("s1", "y"))
	ok, _ := m.Value("k", new(int))
	require.False(t, ok, "a transient failure commits no write")

	fail = false
	_, v, err = m.Do(t.Context(), cmd, h)
	require.NoError(t, err)
	require.Equal(t, agent.Applied, v)
	var k int
	_, _ = m.Value("k", &k)
	require.Equal(t, 1, k)
}

func TestMemoryPutNeedsGet(t *testing.T) {
	m := agent.NewMemory()
	h := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
			return nil, tx.Put("k", 1)
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	reply, v, err := m.Do(t.Context(), &messages.Command{SagaID: "s", Step: "y", Action: messages.Execute}, h)
	require.NoError(t, err)
	require.Equal(t, agent.Transient, v)
	require.Contains(t, reply.Reason, "read it with Get first")
}

// TestMemoryOneWriteAnAction: an action that writes two values is answered
// with an Error, as the JetStream store answers it, and commits nothing.
func TestMemoryOneWriteAnAction(t *testing.T) {
	m := agent.NewMemory()
	h := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
			for _, k := range []string{"a", "b"} {
				var v int
				if _, err := tx.Get(k, &v); err != nil {
					return nil, err
				}
				if err := tx.Put(k, v+1); err != nil {
					return nil, err
				}
			}
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	reply, v, err := m.Do(t.Context(), &messages.Command{SagaID: "s", Step: "y", Action: messages.Execute, Seq: 1}, h)
	require.NoError(t, err)
	require.Equal(t, agent.Transient, v)
	require.Equal(t, messages.Error, reply.Outcome)
	require.Equal(t, "execute y writes 2 values: an action may write one state value", reply.Reason)
	require.Equal(t, messages.Record{}, m.Record("s", "y"))
	for _, k := range []string{"a", "b"} {
		ok, _ := m.Value(k, new(int))
		require.False(t, ok, "%s written", k)
	}
}

// TestHandlerPanicIsATransientError: a handler that panics, in an execute
// or a compensation, is answered with an Error naming the panic and where
// it happened, and the process goes on.
func TestHandlerPanicIsATransientError(t *testing.T) {
	var nilMap map[string]int
	ok := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	h := agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			nilMap["x"] = 1
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { panic("no undo") },
	}
	m := agent.NewMemory()
	reply, v, err := m.Do(t.Context(), &messages.Command{SagaID: "s1", Step: "y", Action: messages.Execute, Seq: 1}, h)
	require.NoError(t, err)
	require.Equal(t, agent.Transient, v)
	require.Equal(t, messages.Error, reply.Outcome)
	require.Regexp(t, `^execute y handler panicked at barrier_test\.go:\d+: assignment to entry in nil map$`, reply.Reason)

	// A compensation of an execute that took effect.
	_, v, err = m.Do(t.Context(), &messages.Command{SagaID: "s2", Step: "y", Action: messages.Execute, Seq: 1},
		agent.Handler{Execute: ok, Compensate: h.Compensate})
	require.NoError(t, err)
	require.Equal(t, agent.Applied, v)
	reply, v, err = m.Do(t.Context(), &messages.Command{SagaID: "s2", Step: "y", Action: messages.Compensate, Seq: 2}, h)
	require.NoError(t, err)
	require.Equal(t, agent.Transient, v)
	require.Equal(t, messages.Error, reply.Outcome)
	require.Regexp(t, `^compensate y handler panicked at barrier_test\.go:\d+: no undo$`, reply.Reason)
}

// TestMemoryRefusesBadKeys: a key that breaks the key rule (a space, a
// wildcard, an empty token) is answered with an Error naming the rule, as
// the JetStream store answers it, and commits nothing.
func TestMemoryRefusesBadKeys(t *testing.T) {
	for _, key := range []string{"a b", "", "q.*", "q.>", "q..r", "q.", "a.b.c.d.e.f.g.h.i"} {
		m := agent.NewMemory()
		h := agent.Handler{
			Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
				_, err := tx.Get(key, new(int))
				return nil, err
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}
		reply, v, err := m.Do(t.Context(), &messages.Command{SagaID: "s", Step: "y", Action: messages.Execute, Seq: 1}, h)
		require.NoError(t, err)
		require.Equal(t, agent.Transient, v, key)
		require.Contains(t, reply.Reason, "breaks the key rule ("+messages.KeyRule+")", key)
		_, err = m.Init(t.Context(), key, 1)
		require.ErrorIs(t, err, messages.ErrBadRequest, key)
	}
	_, err := agent.NewMemory().Init(t.Context(), "patient.p-17", 1)
	require.NoError(t, err)
}

// TestMemoryRefusesMalformedCommands: a command whose saga id, step or
// action is malformed, or a handler without a compensation, is an error
// wrapping ErrBadRequest; nothing runs and nothing is recorded (an
// unknown action was taken for a compensation with nothing to undo).
func TestMemoryRefusesMalformedCommands(t *testing.T) {
	ran := false
	ok := agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			ran = true
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { ran = true; return nil },
	}
	for _, tc := range []struct {
		name string
		cmd  messages.Command
		h    agent.Handler
		want string
	}{
		{"saga id", messages.Command{SagaID: "bad id", Step: "y", Action: messages.Execute}, ok, `saga_id "bad id" breaks the identifier rule`},
		{"step", messages.Command{SagaID: "s", Step: "", Action: messages.Execute}, ok, `step "" breaks the identifier rule`},
		{"action", messages.Command{SagaID: "s", Step: "y", Action: "exec"}, ok, `command action "exec"`},
		{"no compensation", messages.Command{SagaID: "s", Step: "y", Action: messages.Compensate}, agent.Handler{Execute: ok.Execute},
			"step y: handler needs Execute and Compensate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := agent.NewMemory()
			_, _, err := m.Do(t.Context(), &tc.cmd, tc.h)
			require.ErrorIs(t, err, messages.ErrBadRequest)
			require.ErrorContains(t, err, tc.want)
			require.False(t, ran)
			require.Equal(t, messages.Record{}, m.Record(tc.cmd.SagaID, tc.cmd.Step))
		})
	}
}

// TestCheckOutputCountsJSON: the size CheckOutput bounds is the output's
// as json.Marshal writes it, whatever its keys, and whatever its values
// hold that a record escapes: exactly at the bound it passes, a byte under
// it it does not. A value not in UTF-8, which the coordinator refuses, is
// not JSON.
func TestCheckOutputCountsJSON(t *testing.T) {
	for _, out := range []messages.Context{
		{},
		{"a": json.RawMessage(`1`)},
		{"a": json.RawMessage(`1`), "b\"\\<>&\u2028": json.RawMessage(`{"x":[1,2]}`), "é": json.RawMessage(`"\u00e9"`)},
		{"html": json.RawMessage(`"<` + strings.Repeat("&>", 50) + `"`)},
	} {
		data, err := json.Marshal(out)
		require.NoError(t, err)
		require.NoError(t, agent.CheckOutput(out, len(data)), "%s", data)
		require.ErrorIs(t, agent.CheckOutput(out, len(data)-1), messages.ErrTooLarge, "%s", data)
	}
	err := agent.CheckOutput(messages.Context{"ok": json.RawMessage(`1`), "bytes": json.RawMessage("\"\xff\xfe\"")}, 1<<20)
	require.ErrorIs(t, err, messages.ErrBadRequest)
	require.ErrorContains(t, err, `output "bytes": not JSON in UTF-8`)
}

// TestNames: decisions and verdicts print as the logs name them.
func TestNames(t *testing.T) {
	require.Equal(t, []string{"applied", "duplicate", "refused", "noop", "transient", "unknown"},
		[]string{agent.Applied.String(), agent.Duplicate.String(), agent.Refused.String(), agent.Noop.String(), agent.Transient.String(), agent.Verdict(99).String()})
	require.Equal(t, "nothing to undo", agent.NothingToUndo.String())
}
