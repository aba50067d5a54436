package messages_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

func validCommand() messages.Command {
	return messages.Command{
		V: messages.Version, SagaID: "0b4e7c1e-3f1a-4bde-9c55-1f0e6f3f2a10", Saga: "subsidy",
		Step: "government_evaluates", Action: messages.Execute, Attempt: 1, Seq: 2, Tick: 7,
		Context: messages.Context{}.MustSet("subsidy_cost_cents", int64(500000)),
	}
}

func validReply() messages.Reply {
	c := validCommand()
	return messages.ReplyTo(&c, messages.OK, "")
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestDecode(t *testing.T) {
	padded := func(n int) []byte {
		b := []byte(`{"v":1,"tick":3}`)
		return append(b, strings.Repeat(" ", n-len(b))...)
	}
	tests := []struct {
		name string
		data []byte
		into func() any
		want error
	}{
		{"tick", []byte(`{"v":1,"tick":3}`), func() any { return new(messages.Tick) }, nil},
		{"exactly the size limit", padded(messages.MaxPayload), func() any { return new(messages.Tick) }, nil},
		{"one byte over the limit", padded(messages.MaxPayload + 1), func() any { return new(messages.Tick) }, messages.ErrTooLarge},
		{"oversized garbage is refused before parsing", []byte(strings.Repeat("x", messages.MaxPayload+1)), func() any { return new(messages.Tick) }, messages.ErrTooLarge},
		{"not JSON", []byte(`tick 3`), func() any { return new(messages.Tick) }, messages.ErrBadRequest},
		{"not UTF-8", []byte("{\"v\":1,\"context\":{\"a\":\"\xff\"}}"), func() any { return new(messages.StartRequest) }, messages.ErrBadRequest},
		{"empty", []byte(``), func() any { return new(messages.Tick) }, messages.ErrBadRequest},
		{"truncated", []byte(`{"v":1,"tick":`), func() any { return new(messages.Tick) }, messages.ErrBadRequest},
		{"trailing data", []byte(`{"v":1,"tick":3} {}`), func() any { return new(messages.Tick) }, messages.ErrBadRequest},
		{"a string for a number", []byte(`{"v":1,"tick":"3"}`), func() any { return new(messages.Tick) }, messages.ErrBadRequest},
		{"a string for the version", []byte(`{"v":"1","tick":3}`), func() any { return new(messages.Tick) }, messages.ErrBadRequest},
		{"a fraction for an integer", []byte(`{"v":1,"tick":3.5}`), func() any { return new(messages.Tick) }, messages.ErrBadRequest},
		{"an array for an object", []byte(`[1,2]`), func() any { return new(messages.StartRequest) }, messages.ErrBadRequest},
		{"a number for the context", []byte(`{"v":1,"context":5}`), func() any { return new(messages.StartRequest) }, messages.ErrBadRequest},
		{"version 2", []byte(`{"v":2,"tick":3}`), func() any { return new(messages.Tick) }, messages.ErrVersion},
		{"no version", []byte(`{"tick":3}`), func() any { return new(messages.Tick) }, messages.ErrVersion},
		{"null", []byte(`null`), func() any { return new(messages.Tick) }, messages.ErrVersion},
		{"start request, version 0", []byte(`{"v":0}`), func() any { return new(messages.StartRequest) }, messages.ErrVersion},
		{"status request, version 9", []byte(`{"v":9,"saga_id":"x"}`), func() any { return new(messages.StatusRequest) }, messages.ErrVersion},
		{"list request, version 9", []byte(`{"v":9}`), func() any { return new(messages.ListRequest) }, messages.ErrVersion},
		{"retry request, version 9", []byte(`{"v":9,"saga_id":"x"}`), func() any { return new(messages.RetryRequest) }, messages.ErrVersion},
		{"command, version 9", []byte(`{"v":9}`), func() any { return new(messages.Command) }, messages.ErrVersion},
		{"reply, version 9", []byte(`{"v":9}`), func() any { return new(messages.Reply) }, messages.ErrVersion},
		{"a type without a version check", []byte(`{"registered":2}`), func() any { return new(messages.Summary) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := messages.Decode(tt.data, tt.into())
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			for _, other := range []error{messages.ErrTooLarge, messages.ErrBadRequest, messages.ErrVersion} {
				if other != tt.want {
					require.NotErrorIs(t, err, other)
				}
			}
		})
	}

	// A value of the wrong type is named in the protocol's terms, not Go's.
	for data, want := range map[string]string{
		`[1,2]`:                           "bad request: the payload: array where an object is wanted",
		`{"v":1,"tick":"3"}`:              "bad request: tick: string where an integer (int64) is wanted",
		`{"v":1,"tick":3.5}`:              "bad request: tick: number 3.5 where an integer (int64) is wanted",
		`{"v":1,"tick":1e30}`:             "bad request: tick: number 1e30 where an integer (int64) is wanted",
		`{"v":1,"context":5}`:             "bad request: context: number where an object is wanted",
		`{"v":1,"saga_id":true}`:          "bad request: saga_id: bool where a string is wanted",
		`{"v":1,"context":{"a":1},"x":1}`: "",
	} {
		err := messages.Decode([]byte(data), new(messages.StartRequest))
		if strings.HasPrefix(data, `{"v":1,"tick"`) {
			err = messages.Decode([]byte(data), new(messages.Tick))
		}
		if want == "" {
			require.NoError(t, err, data)
			continue
		}
		require.EqualError(t, err, want, data)
		require.NotContains(t, err.Error(), "Go", data)
	}

	var tk messages.Tick
	require.NoError(t, messages.Decode([]byte(`{"v":1,"tick":42,"unknown":true}`), &tk))
	require.Equal(t, messages.Tick{V: 1, Tick: 42}, tk, "unknown fields are ignored")

	var sr messages.StartRequest
	require.NoError(t, messages.Decode([]byte(`{"v":1,"saga_id":"order-1","context":{"cost":500000}}`), &sr))
	require.Equal(t, "order-1", sr.SagaID)
	cost, err := sr.Context.Int64("cost")
	require.NoError(t, err)
	require.Equal(t, int64(500000), cost)
}

func TestCommandValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*messages.Command)
		want   error
	}{
		{"valid execute", func(*messages.Command) {}, nil},
		{"valid compensate", func(c *messages.Command) { c.Action = messages.Compensate; c.Attempt = 5 }, nil},
		{"no context", func(c *messages.Command) { c.Context = nil }, nil},
		{"version 0", func(c *messages.Command) { c.V = 0 }, messages.ErrVersion},
		{"version 2", func(c *messages.Command) { c.V = 2 }, messages.ErrVersion},
		{"empty saga id", func(c *messages.Command) { c.SagaID = "" }, messages.ErrBadRequest},
		{"saga id with a dot", func(c *messages.Command) { c.SagaID = "a.b" }, messages.ErrBadRequest},
		{"saga with a wildcard", func(c *messages.Command) { c.Saga = "*" }, messages.ErrBadRequest},
		{"saga with a full wildcard", func(c *messages.Command) { c.Saga = "sub>" }, messages.ErrBadRequest},
		{"empty step", func(c *messages.Command) { c.Step = "" }, messages.ErrBadRequest},
		{"step with a space", func(c *messages.Command) { c.Step = "government evaluates" }, messages.ErrBadRequest},
		{"step with a newline", func(c *messages.Command) { c.Step = "a\nb" }, messages.ErrBadRequest},
		{"every token bad", func(c *messages.Command) { c.SagaID, c.Saga, c.Step = "", ".", ">" }, messages.ErrBadRequest},
		{"no action", func(c *messages.Command) { c.Action = "" }, messages.ErrBadRequest},
		{"unknown action", func(c *messages.Command) { c.Action = "undo" }, messages.ErrBadRequest},
		{"attempt 0", func(c *messages.Command) { c.Attempt = 0 }, messages.ErrBadRequest},
		{"negative attempt", func(c *messages.Command) { c.Attempt = -1 }, messages.ErrBadRequest},
		{"seq 0", func(c *messages.Command) { c.Seq = 0 }, messages.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validCommand()
			tt.change(&c)
			err := c.Validate()
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}

	c := validCommand()
	c.SagaID, c.Step = "a.b", "c d"
	err := c.Validate()
	require.ErrorContains(t, err, "saga_id")
	require.ErrorContains(t, err, "step")
	require.NotContains(t, err.Error(), `saga "subsidy"`, "only the bad tokens are named")
}

func TestReplyValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*messages.Reply)
		want   error
	}{
		{"ok", func(*messages.Reply) {}, nil},
		{"failed with a reason", func(r *messages.Reply) { r.Outcome, r.Reason = messages.Failed, "budget insufficient" }, nil},
		{"error without a reason", func(r *messages.Reply) { r.Outcome = messages.Error }, nil},
		{"working", func(r *messages.Reply) { r.Outcome = messages.Working }, nil},
		{"compensate ok", func(r *messages.Reply) { r.Action = messages.Compensate }, nil},
		{"failed without a reason", func(r *messages.Reply) { r.Outcome = messages.Failed }, messages.ErrBadRequest},
		{"no outcome", func(r *messages.Reply) { r.Outcome = "" }, messages.ErrBadRequest},
		{"unknown outcome", func(r *messages.Reply) { r.Outcome = "maybe" }, messages.ErrBadRequest},
		{"unknown action", func(r *messages.Reply) { r.Action = "retry" }, messages.ErrBadRequest},
		{"saga id with a wildcard", func(r *messages.Reply) { r.SagaID = "a*" }, messages.ErrBadRequest},
		{"empty saga", func(r *messages.Reply) { r.Saga = "" }, messages.ErrBadRequest},
		{"step with a tab", func(r *messages.Reply) { r.Step = "a\tb" }, messages.ErrBadRequest},
		{"attempt 0", func(r *messages.Reply) { r.Attempt = 0 }, messages.ErrBadRequest},
		{"seq 0", func(r *messages.Reply) { r.Seq = 0 }, messages.ErrBadRequest},
		{"version 0", func(r *messages.Reply) { r.V = 0 }, messages.ErrVersion},
		{"version 2", func(r *messages.Reply) { r.V = 2 }, messages.ErrVersion},
		{"agent and role", func(r *messages.Reply) { r.Agent, r.Role = "government-1", "government" }, nil},
		{"agent not a token", func(r *messages.Reply) { r.Agent = "a b" }, messages.ErrBadRequest},
		{"role not a token", func(r *messages.Reply) { r.Role = "gov.ernment" }, messages.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validReply()
			tt.change(&r)
			err := r.Validate()
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}
}

func TestReplyTo(t *testing.T) {
	c := validCommand()
	c.Action = messages.Compensate
	require.Equal(t, messages.Reply{
		V: messages.Version, SagaID: c.SagaID, Saga: "subsidy", Step: "government_evaluates",
		Action: messages.Compensate, Attempt: 1, Seq: 2, Outcome: messages.Failed, Reason: "locked",
	}, messages.ReplyTo(&c, messages.Failed, "locked"))
}

func TestActionAndOutcome(t *testing.T) {
	for _, a := range []messages.Action{messages.Execute, messages.Compensate} {
		require.True(t, a.Valid(), a)
	}
	for _, a := range []messages.Action{"", "Execute", "undo"} {
		require.False(t, a.Valid(), a)
	}
	for _, o := range []messages.Outcome{messages.OK, messages.Failed, messages.Error, messages.Working} {
		require.True(t, o.Valid(), o)
	}
	for _, o := range []messages.Outcome{"", "OK", "done"} {
		require.False(t, o.Valid(), o)
	}
}

func TestWireFormat(t *testing.T) {
	// The field names are the protocol: docs/protocol.md documents them.
	c := validCommand()
	c.SagaID = "s1"
	require.JSONEq(t, `{"v":1,"saga_id":"s1","saga":"subsidy","step":"government_evaluates","action":"execute",
		"attempt":1,"seq":2,"tick":7,"context":{"subsidy_cost_cents":500000}}`, string(mustJSON(t, c)))

	r := messages.ReplyTo(&c, messages.OK, "")
	require.JSONEq(t, `{"v":1,"saga_id":"s1","saga":"subsidy","step":"government_evaluates","action":"execute",
		"attempt":1,"seq":2,"outcome":"ok"}`, string(mustJSON(t, r)), "empty reason, output and agent are left out")

	ev := messages.Event{V: 1, SagaID: "s1", Saga: "subsidy", Status: "rolled_back", Tick: 4}
	require.JSONEq(t, `{"v":1,"saga_id":"s1","saga":"subsidy","status":"rolled_back","tick":4}`, string(mustJSON(t, ev)))

	s := messages.Summary{V: 1, Tick: 9, Registered: 3, Active: 2, Completed: 5, RolledBack: 1, TimedOut: 1, Failed: 1, Awaiting: 2, Retrying: 1, Due: 4}
	require.JSONEq(t, `{"v":1,"tick":9,"registered":3,"active":2,"completed":5,"rolled_back":1,"timed_out":1,
		"failed":1,"awaiting":2,"retrying":1,"due":4}`, string(mustJSON(t, s)))

	c.Rank = 12
	require.JSONEq(t, `{"v":1,"saga_id":"s1","saga":"subsidy","step":"government_evaluates","action":"execute",
		"attempt":1,"seq":2,"tick":7,"rank":12,"context":{"subsidy_cost_cents":500000}}`, string(mustJSON(t, c)))
	w := messages.ReplyTo(&c, messages.Working, "")
	w.Until = 10
	require.JSONEq(t, `{"v":1,"saga_id":"s1","saga":"subsidy","step":"government_evaluates","action":"execute",
		"attempt":1,"seq":2,"outcome":"working","until":10}`, string(mustJSON(t, w)))
	bad := messages.ReplyTo(&c, messages.OK, "")
	bad.Until = 10
	require.ErrorIs(t, bad.Validate(), messages.ErrBadRequest, "only a working reply declares a tick")

	resp := messages.StartResponse{V: 1, Error: &messages.WireError{Code: messages.CodeNotFound, Message: "no saga \"flood\""}}
	require.JSONEq(t, `{"v":1,"error":{"code":"not_found","message":"no saga \"flood\""}}`, string(mustJSON(t, resp)))
	require.EqualError(t, resp.Error, `not_found: no saga "flood"`)
}

func TestSubjects(t *testing.T) {
	cmp := validCommand()
	cmp.Action = messages.Compensate
	rep := validReply()
	tests := []struct {
		got, want string
	}{
		{messages.ExecuteSubject("subsidy", "government_evaluates"), "saga.subsidy.government_evaluates"},
		{messages.CompensateSubject("subsidy", "government_evaluates"), "saga.subsidy.government_evaluates.compensate"},
		{messages.CommandSubject("subsidy", "government_evaluates", messages.Execute), "saga.subsidy.government_evaluates"},
		{messages.CommandSubject("subsidy", "government_evaluates", messages.Compensate), "saga.subsidy.government_evaluates.compensate"},
		{new(validCommand()).Subject(), "saga.subsidy.government_evaluates"},
		{cmp.Subject(), "saga.subsidy.government_evaluates.compensate"},
		{messages.ReplySubject("subsidy", "government_evaluates"), "natsaga.reply.subsidy.government_evaluates"},
		{rep.Subject(), "natsaga.reply.subsidy.government_evaluates"},
		{messages.StartSubject("subsidy"), "natsaga.start.subsidy"},
		{messages.StartSubjects, "natsaga.start.*"},
		{messages.EventSubject("subsidy", "rolled_back"), "natsaga.event.subsidy.rolled_back"},
		{messages.EventLogSubject("subsidy", "rolled_back"), "natsaga.eventlog.subsidy.rolled_back"},
		{messages.StateStream("government"), "NATSAGA_STATE_GOVERNMENT"},
		{messages.BranchSubject("government", "s1", "budget_deducted"), "natsaga.state.government.branch.s1.budget_deducted"},
		{messages.BranchSubjects("government"), "natsaga.state.government.branch.>"},
		{messages.DataSubject("government", "budget"), "natsaga.state.government.data.budget"},
		{messages.CommandConsumer("government"), "agent-government"},
		{messages.TickSubject, "natsaga.tick"},
		{messages.StatusSubject, "natsaga.status"},
		{messages.SummarySubject, "natsaga.summary"},
		{messages.ListSubject, "natsaga.list"},
		{messages.RetrySubject, "natsaga.retry"},
		{messages.AgentStatsSubject, "natsaga.agents.stats"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.got)
	}
	require.Equal(t, []string{"natsaga.state.government.>"}, messages.StateSubjects("government"))
}

// matches reports whether subject falls under the NATS subject filter.
func matches(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(f) == len(s)
}

func TestMatchesHelper(t *testing.T) {
	require.True(t, matches("a.*", "a.b"))
	require.False(t, matches("a.*", "a.b.c"))
	require.True(t, matches("a.>", "a.b.c"))
	require.False(t, matches("a.>", "a"))
	require.False(t, matches("a.b", "a.c"))
}

// TestSubjectsFallInTheirStream checks each subject against the stream that
// must capture it, and that no stream captures another's subjects (JetStream
// refuses overlapping streams).
func TestSubjectsFallInTheirStream(t *testing.T) {
	streams := map[string][]string{
		messages.CommandStream:             messages.CommandSubjects,
		messages.ReplyStream:               messages.ReplySubjects,
		messages.EventStream:               messages.EventLogSubjects,
		messages.StateStream("government"): messages.StateSubjects("government"),
		messages.StateStream("household"):  messages.StateSubjects("household"),
	}
	tests := []struct {
		subject string
		stream  string // "" for a core NATS subject that no stream captures
	}{
		{messages.ExecuteSubject("subsidy", "household_applies"), messages.CommandStream},
		{messages.CompensateSubject("subsidy", "household_applies"), messages.CommandStream},
		{messages.ReplySubject("subsidy", "household_applies"), messages.ReplyStream},
		{messages.EventSubject("subsidy", "completed"), ""},
		{messages.EventLogSubject("subsidy", "completed"), messages.EventStream},
		{messages.BranchSubject("government", "s1", "budget_deducted"), messages.StateStream("government")},
		{messages.DataSubject("household", "h1"), messages.StateStream("household")},
		{messages.StartSubject("subsidy"), ""},
		{messages.TickSubject, ""},
		{messages.StatusSubject, ""},
		{messages.SummarySubject, ""},
		{messages.ListSubject, ""},
		{messages.RetrySubject, ""},
		{messages.AgentStatsSubject, ""},
	}
	for _, tt := range tests {
		var in []string
		for name, filters := range streams {
			for _, f := range filters {
				if matches(f, tt.subject) {
					in = append(in, name)
				}
			}
		}
		if tt.stream == "" {
			require.Empty(t, in, tt.subject)
		} else {
			require.Equal(t, []string{tt.stream}, in, tt.subject)
		}
	}
	require.True(t, matches(messages.StartSubjects, messages.StartSubject("insurance")))
	require.True(t, matches(messages.BranchSubjects("government"), messages.BranchSubject("government", "s1", "x")))
	require.False(t, matches(messages.BranchSubjects("government"), messages.DataSubject("government", "budget")))
}

func TestParseRecordKeyAndSubject(t *testing.T) {
	id, step, ok := messages.ParseRecordKey(messages.RecordKey("s-1", "budget_deducted"))
	require.True(t, ok)
	require.Equal(t, []string{"s-1", "budget_deducted"}, []string{id, step})
	for _, bad := range []string{"s-1", "/x", "s-1/", "a/b/c", "", "/"} {
		_, _, ok := messages.ParseRecordKey(bad)
		require.False(t, ok, bad)
	}
	role, ok := messages.ParseRecordSubject(messages.RecordSubject("government"))
	require.True(t, ok)
	require.Equal(t, "government", role)
	for _, bad := range []string{messages.DataSubject("government", "budget"), "natsaga.records.", "natsaga.records.a.b", "natsaga.reply.a.b"} {
		_, ok := messages.ParseRecordSubject(bad)
		require.False(t, ok, bad)
	}
}

func TestTokens(t *testing.T) {
	tests := []struct {
		s     string
		valid bool
	}{
		{"subsidy", true},
		{"government_evaluates", true},
		{"0b4e7c1e-3f1a-4bde-9c55-1f0e6f3f2a10", true},
		{"ÉTAT", false},
		{strings.Repeat("a", messages.MaxTokenLen), true},
		{strings.Repeat("a", messages.MaxTokenLen+1), false},
		{"a/b", false},
		{"a=b", false},
		{"a:b", false},
		{"$JS", false},
		{"a\x00b", false},
		{"", false},
		{"a.b", false},
		{".", false},
		{"*", false},
		{"a*", false},
		{">", false},
		{"a b", false},
		{"a\tb", false},
		{"a\rb", false},
		{"a\nb", false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.valid, messages.ValidToken(tt.s), "%q", tt.s)
		err := messages.CheckToken("step", tt.s)
		if tt.valid {
			require.NoError(t, err)
			continue
		}
		require.ErrorIs(t, err, messages.ErrBadRequest)
		require.ErrorContains(t, err, "step")
		require.ErrorContains(t, err, messages.TokenRule)
		require.Less(t, len(err.Error()), 300, "the error quotes a cut value")
	}
}

func TestContext(t *testing.T) {
	big := int64(math.MaxInt64 - 1) // beyond float64's exact integers
	c := messages.Context{}.MustSet("budget_cents", big).MustSet("agent", "household-7").MustSet("approved", true)

	t.Run("nil", func(t *testing.T) {
		var out messages.Context // a handler's output, not made
		err := out.Set("approved", true)
		require.ErrorIs(t, err, messages.ErrNilContext)
		require.EqualError(t, err, `context key "approved": set on a nil Context (make one with messages.Context{})`)
		require.PanicsWithError(t, err.Error(), func() { out.MustSet("approved", true) })
	})

	t.Run("Int64", func(t *testing.T) {
		v, err := c.Int64("budget_cents")
		require.NoError(t, err)
		require.Equal(t, big, v)

		// Through JSON and back, the integer stays exact.
		var back messages.Context
		require.NoError(t, json.Unmarshal(mustJSON(t, c), &back))
		v, err = back.Int64("budget_cents")
		require.NoError(t, err)
		require.Equal(t, big, v)

		_, err = c.Int64("missing")
		require.ErrorIs(t, err, messages.ErrMissingKey)
		require.ErrorContains(t, err, "missing")
		_, err = c.Int64("agent")
		require.Error(t, err)
		require.NotErrorIs(t, err, messages.ErrMissingKey)
		_, err = messages.Context{"x": json.RawMessage(`1.5`)}.Int64("x")
		require.Error(t, err)
	})

	t.Run("String", func(t *testing.T) {
		v, err := c.String("agent")
		require.NoError(t, err)
		require.Equal(t, "household-7", v)
		_, err = c.String("missing")
		require.ErrorIs(t, err, messages.ErrMissingKey)
		_, err = c.String("budget_cents")
		require.Error(t, err)
		require.ErrorContains(t, err, "budget_cents")
	})

	t.Run("Get", func(t *testing.T) {
		var ok bool
		require.NoError(t, c.Get("approved", &ok))
		require.True(t, ok)
		var nothing messages.Context
		require.ErrorIs(t, nothing.Get("approved", &ok), messages.ErrMissingKey)
	})

	t.Run("Set", func(t *testing.T) {
		d := messages.Context{}
		require.NoError(t, d.Set("n", 3))
		require.Equal(t, json.RawMessage(`3`), d["n"])
		err := d.Set("f", func() {})
		require.Error(t, err)
		require.ErrorContains(t, err, `"f"`)
		require.NotContains(t, d, "f")
		require.Panics(t, func() { d.MustSet("ch", make(chan int)) })
	})

	t.Run("Merge", func(t *testing.T) {
		d := messages.Context{}.MustSet("agent", "household-7").MustSet("status", "pending")
		d.Merge(messages.Context{}.MustSet("status", "approved").MustSet("payout_cents", 150000))
		require.Equal(t, messages.Context{}.MustSet("agent", "household-7").MustSet("status", "approved").
			MustSet("payout_cents", 150000), d)
		d.Merge(nil)
		require.Len(t, d, 3)
	})

	t.Run("Clone", func(t *testing.T) {
		d := c.Clone()
		require.Equal(t, c, d)
		d.MustSet("agent", "other")
		d.MustSet("extra", 1)
		v, err := c.String("agent")
		require.NoError(t, err)
		require.Equal(t, "household-7", v, "the clone shares no map")
		require.NotContains(t, c, "extra")

		var nothing messages.Context
		require.Equal(t, messages.Context{}, nothing.Clone())
	})
}

func TestAddTicksSaturates(t *testing.T) {
	for _, tc := range []struct{ a, b, want int64 }{
		{1, 2, 3},
		{math.MaxInt64 - 1, 1, math.MaxInt64},
		{math.MaxInt64 - 1, 2, math.MaxInt64},
		{math.MaxInt64, math.MaxInt64, math.MaxInt64},
		{math.MinInt64 + 1, -2, math.MinInt64},
		{math.MinInt64, math.MinInt64, math.MinInt64},
		{math.MaxInt64, math.MinInt64, -1},
	} {
		require.Equal(t, tc.want, messages.AddTicks(tc.a, tc.b), "%d+%d", tc.a, tc.b)
	}
	require.NoError(t, messages.CheckTick(math.MaxInt64-1, math.MaxInt64))
	require.NoError(t, messages.CheckTick(0, messages.MaxTickJump))
	require.ErrorIs(t, messages.CheckTick(0, messages.MaxTickJump+1), messages.ErrBadRequest)
	require.ErrorIs(t, messages.CheckTick(math.MinInt64, 0), messages.ErrBadRequest)
}

// TestRecordCheck: a record holds final results that are ok or failed,
// with a reason when failed, or claims with no outcome yet; anything else
// is refused as a reply saying it would be.
func TestRecordCheck(t *testing.T) {
	res := func(o messages.Outcome, reason string) *messages.Result {
		return &messages.Result{Outcome: o, Reason: reason, Seq: 1}
	}
	for _, tc := range []struct {
		name string
		rec  messages.Record
		want string
	}{
		{"empty", messages.Record{}, ""},
		{"ok", messages.Record{Execute: res(messages.OK, "")}, ""},
		{"failed with a reason", messages.Record{Execute: res(messages.Failed, "no")}, ""},
		{"ok, compensated", messages.Record{Execute: res(messages.OK, ""), Compensate: res(messages.OK, "nothing to undo")}, ""},
		{"a claim", messages.Record{Execute: &messages.Result{Pending: true, Seq: 1}}, ""},
		{"no outcome", messages.Record{Execute: res("", "")}, `a recorded result's outcome is ok or failed, not ""`},
		{"error", messages.Record{Execute: res(messages.Error, "down")}, `a recorded result's outcome is ok or failed, not "error"`},
		{"working", messages.Record{Compensate: res(messages.Working, "")}, `a recorded result's outcome is ok or failed, not "working"`},
		{"failed without a reason", messages.Record{Compensate: res(messages.Failed, "")}, "a failed result needs a reason"},
	} {
		err := tc.rec.Check()
		if tc.want == "" {
			require.NoError(t, err, tc.name)
			continue
		}
		require.ErrorIs(t, err, messages.ErrBadRequest, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
	}
}

// TestClipReason: a reason keeps at most MaxReason bytes as JSON carries
// it, invalid UTF-8 (one byte here, three on the wire) counted as the
// U+FFFD it becomes.
func TestClipReason(t *testing.T) {
	long := strings.Repeat("é", messages.MaxReason)
	for _, tc := range []struct {
		name, reason, want string
	}{
		{"short", "budget exhausted", "budget exhausted"},
		{"invalid bytes", "bad \xff\xfe byte", "bad \uFFFD byte"},
		{"long", long, long[:messages.MaxReason-len("… (2048 bytes)")] + "… (2048 bytes)"},
		{"many invalid bytes", strings.Repeat("\xff", 5000), "\uFFFD"},
		{"invalid bytes between", strings.Repeat("a\xff", 1000), ""},
	} {
		got := messages.ClipReason(tc.reason)
		if tc.want != "" {
			require.Equal(t, tc.want, got, tc.name)
		} else {
			require.True(t, utf8.ValidString(got), tc.name)
			require.True(t, strings.HasPrefix(strings.Repeat("a\uFFFD", 1000), strings.TrimSuffix(got, "… (2000 bytes)")), tc.name)
		}
		wire, err := json.Marshal(got)
		require.NoError(t, err)
		var back string
		require.NoError(t, json.Unmarshal(wire, &back))
		require.LessOrEqual(t, len(back), messages.MaxReason, tc.name)
	}
}
