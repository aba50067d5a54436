package coordinator

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// threeSteps is a saga of three steps, for the tests of the storage rule.
var threeSteps = saga.Definition{Name: "trip", Subject: "trip", Steps: []saga.Step{
	{Name: "flight", Role: "airline"}, {Name: "hotel", Role: "hotel"}, {Name: "card", Role: "bank"},
}}

// TestWhichRecordAnswerIsStored applies a record's answer to a saga in
// each situation and checks whether the coordinator stores the change.
func TestWhichRecordAnswerIsStored(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		before  []messages.Outcome // answers to the saga's commands before the one tested
		outcome messages.Outcome
		stored  bool
	}{
		{"an ok execute that sends the next execute is not stored", nil, messages.OK, false},
		{"the second such advance is not stored either", []messages.Outcome{messages.OK}, messages.OK, false},
		{"an ok execute of the last step finishes the saga: stored", []messages.Outcome{messages.OK, messages.OK}, messages.OK, true},
		{"a rejected execute starts the rollback: stored", []messages.Outcome{messages.OK}, messages.Failed, true},
		{"a transient error schedules a retry: stored", nil, messages.Error, true},
		{"working: stored", nil, messages.Working, true},
		{"an ok compensation that ends the rollback: stored", []messages.Outcome{messages.OK, messages.Failed}, messages.OK, true},
		{"an ok compensation that sends the next one: stored", []messages.Outcome{messages.OK, messages.OK, messages.Failed}, messages.OK, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := saga.New(saga.Options{})
			require.NoError(t, e.Register(threeSteps))
			var out saga.Outbox
			_, err := e.Start("s1", "trip", nil, &out)
			require.NoError(t, err)
			answer := func(o messages.Outcome) {
				out.Reset()
				cmd, ok := e.Command("s1")
				require.True(t, ok)
				require.NoError(t, applyRecord(e.ApplyReply, messages.ReplyTo(&cmd, o, "why"), now, &out))
			}
			for _, o := range tc.before {
				answer(o)
			}
			answer(tc.outcome)
			if tc.stored {
				require.NotEmpty(t, out.Changed)
				for _, x := range out.Changed {
					require.Equal(t, saga.ID("s1"), x.ID)
				}
			} else {
				require.Empty(t, out.Changed)
				require.Len(t, out.Commands, 1, "the next execute still goes out")
			}
		})
	}
}

// TestAReplyAfterAnUnstoredAdvanceIsStored checks that a saga advanced
// on a record and changed again in the same batch is stored.
func TestAReplyAfterAnUnstoredAdvanceIsStored(t *testing.T) {
	e := saga.New(saga.Options{})
	require.NoError(t, e.Register(threeSteps))
	var out saga.Outbox
	_, err := e.Start("s1", "trip", nil, &out)
	require.NoError(t, err)
	out.Reset()
	cmd, _ := e.Command("s1")
	require.NoError(t, applyRecord(e.ApplyReply, messages.ReplyTo(&cmd, messages.OK, ""), time.Now(), &out))
	require.Empty(t, out.Changed)
	cmd, _ = e.Command("s1")
	require.NoError(t, applyRecord(e.ApplyReply, messages.ReplyTo(&cmd, messages.Failed, "no room"), time.Now(), &out))
	require.NotEmpty(t, out.Changed)
	require.Equal(t, saga.Compensating, out.Changed[len(out.Changed)-1].Status)
}

func TestRenumber(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  saga.Status
		action  messages.Action
		started int64
		want    int
	}{
		{"executing: past one command per step", saga.InProgress, messages.Execute, 3, 7},
		{"compensating: every change was stored", saga.Compensating, messages.Compensate, 3, 4},
		{"finished", saga.Completed, "", 3, 4},
		{"failed while compensating", saga.Failed, messages.Compensate, 3, 4},
		{"pending for the clock's tick: it may have begun", saga.Pending, "", 5, 7},
		{"pending for an earlier tick", saga.Pending, "", 4, 7},
		{"pending for a later tick", saga.Pending, "", 6, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := saga.Execution{Status: tc.status, Action: tc.action, StartedTick: tc.started, Seq: 4}
			renumber(&x, &threeSteps, 5)
			require.Equal(t, tc.want, x.Seq)
		})
	}
}

func TestOnlyBegan(t *testing.T) {
	began := func(change func(x *saga.Execution)) saga.Execution {
		x := saga.Execution{Status: saga.InProgress, StartedTick: 5, Current: 0, Action: messages.Execute,
			Attempt: 1, Awaiting: true, Rank: 9, Round: 12}
		if change != nil {
			change(&x)
		}
		return x
	}
	for _, tc := range []struct {
		name   string
		x      saga.Execution
		stored bool
		want   bool
	}{
		{"began at the tick, in its first round", began(nil), true, true},
		{"unranked: no round", began(func(x *saga.Execution) { x.Rank, x.Round = 0, 0 }), true, true},
		{"never stored: started now, not scheduled", began(nil), false, false},
		{"began at another tick", began(func(x *saga.Execution) { x.StartedTick = 4 }), true, false},
		{"in a later round", began(func(x *saga.Execution) { x.Round = 13 }), true, false},
		{"past its first step", began(func(x *saga.Execution) { x.Current = 1 }), true, false},
		{"its first step tried again", began(func(x *saga.Execution) { x.Attempt = 2 }), true, false},
		{"waiting to retry", began(func(x *saga.Execution) { x.RetryAt = time.Unix(1, 0) }), true, false},
		{"answered working", began(func(x *saga.Execution) { x.Awaiting, x.Working = false, true }), true, false},
		{"rolling back", began(func(x *saga.Execution) { x.Status, x.Action = saga.Compensating, messages.Compensate }), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, onlyBegan(&tc.x, 5, 12, tc.stored))
		})
	}
}

func TestParseClock(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  storedClock
		bad   bool
	}{
		{`{"tick":7,"round":31}`, storedClock{Tick: 7, Round: 31}, false},
		{`{"tick":7}`, storedClock{Tick: 7}, false},
		{`7`, storedClock{Tick: 7}, false},
		{`-1`, storedClock{}, true},
		{`{"tick":7,"round":-2}`, storedClock{}, true},
		{`{"tick":"7"}`, storedClock{}, true},
		{`seven`, storedClock{}, true},
		{``, storedClock{}, true},
	} {
		t.Run(tc.value, func(t *testing.T) {
			got, err := parseClock([]byte(tc.value))
			if tc.bad {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
