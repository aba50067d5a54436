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
				require.NoError(t, applyRecord(e, messages.ReplyTo(&cmd, o, "why"), now, &out))
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
	require.NoError(t, applyRecord(e, messages.ReplyTo(&cmd, messages.OK, ""), time.Now(), &out))
	require.Empty(t, out.Changed)
	cmd, _ = e.Command("s1")
	require.NoError(t, applyRecord(e, messages.ReplyTo(&cmd, messages.Failed, "no room"), time.Now(), &out))
	require.NotEmpty(t, out.Changed)
	require.Equal(t, saga.Compensating, out.Changed[len(out.Changed)-1].Status)
}

func TestRenumber(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status saga.Status
		action messages.Action
		want   int
	}{
		{"executing: past one command per step", saga.InProgress, messages.Execute, 7},
		{"compensating: every change was stored", saga.Compensating, messages.Compensate, 4},
		{"finished", saga.Completed, "", 4},
		{"failed while compensating", saga.Failed, messages.Compensate, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := saga.Execution{Status: tc.status, Action: tc.action, Seq: 4}
			renumber(&x, &threeSteps)
			require.Equal(t, tc.want, x.Seq)
		})
	}
}
