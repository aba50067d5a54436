package saga_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// startRanked schedules a ranked subsidy saga id to start at tick.
func (h *harness) startRanked(id saga.ID, rank, tick int64) {
	h.t.Helper()
	h.out.Reset()
	_, err := h.e.StartWith(id, "subsidy", nil, saga.StartOptions{Rank: rank, Tick: tick}, &h.out)
	require.NoError(h.t, err)
	h.record()
}

// released returns "<saga>/<step>/<action>" of each command of the last
// input, in order.
func (h *harness) released() []string {
	var s []string
	for _, c := range h.out.Commands {
		s = append(s, c.SagaID+"/"+c.Step+"/"+string(c.Action))
	}
	return s
}

func TestRoundsReleaseInRankOrder(t *testing.T) {
	h := newHarness(t, subsidyDef())
	// Started out of rank order, for the next tick: nothing goes out yet.
	h.startRanked("c", 3, 1)
	h.startRanked("a", 1, 1)
	h.startRanked("b", 2, 1)
	require.Empty(t, h.sent)
	require.Equal(t, "pending", string(h.get("a").Status))

	h.tick(1)
	require.Equal(t, []string{"a/household_applies/execute", "b/household_applies/execute", "c/household_applies/execute"}, h.released())
	require.Equal(t, 3, h.e.Summary().Due)

	// The answers come in any order; the next round waits for the last.
	require.NoError(t, h.reply(h.last("c"), messages.OK, "", nil))
	require.Empty(t, h.released())
	require.NoError(t, h.reply(h.last("a"), messages.OK, "", nil))
	require.Empty(t, h.released())
	require.ErrorIs(t, h.apply(messages.ReplyTo(ptr(h.e.Command("c")), messages.OK, "")), saga.ErrEarly,
		"an answer to a command whose round is not released is early")
	require.NoError(t, h.reply(h.last("b"), messages.OK, "", nil))
	require.Equal(t, []string{"a/government_evaluates/execute", "b/government_evaluates/execute", "c/government_evaluates/execute"}, h.released())

	// b is rejected: its compensation joins the round of a's and c's next steps.
	require.NoError(t, h.reply(h.last("b"), messages.Failed, "budget insufficient", nil))
	require.NoError(t, h.reply(h.last("c"), messages.OK, "", nil))
	require.Empty(t, h.released())
	require.NoError(t, h.reply(h.last("a"), messages.OK, "", nil))
	require.Equal(t, []string{"a/budget_deducted/execute", "b/household_applies/compensate", "c/budget_deducted/execute"}, h.released())
	for _, id := range []saga.ID{"a", "b", "c"} {
		require.Equal(t, int64(3), h.get(id).Round, id)
	}

	// A transient error keeps the round open until its retry is answered.
	require.NoError(t, h.reply(h.last("a"), messages.Error, "ledger down", nil))
	require.NoError(t, h.reply(h.last("b"), messages.OK, "", nil))
	require.NoError(t, h.reply(h.last("c"), messages.OK, "", nil))
	require.Equal(t, 1, h.e.Summary().Due, "the retry is due")
	h.wake(h.now.Add(saga.DefaultRetry.Backoff))
	require.Equal(t, []string{"a/budget_deducted/execute"}, h.released())
	require.NoError(t, h.reply(h.last("a"), messages.OK, "", nil))
	require.Equal(t, saga.Completed, h.get("a").Status)
	require.Equal(t, saga.RolledBack, h.get("b").Status)
	require.Equal(t, saga.Completed, h.get("c").Status)
	require.Equal(t, 0, h.e.Summary().Due)
}

func TestUnrankedSagasAreNotHeld(t *testing.T) {
	h := newHarness(t, subsidyDef())
	h.startRanked("ranked", 1, 0)
	require.Equal(t, []string{"ranked/household_applies/execute"}, h.released(), "a round with nothing open is released at once")
	id, err := h.start("free", "subsidy", nil)
	require.NoError(t, err)
	require.Equal(t, []string{"free/household_applies/execute"}, h.released())
	require.NoError(t, h.reply(h.last(id), messages.OK, "", nil))
	require.Equal(t, []string{"free/government_evaluates/execute"}, h.released(), "an unranked saga does not wait for a round")
}

// contractorDef is a one-step saga whose step may take 3 ticks.
func contractorDef() saga.Definition {
	return saga.Definition{Name: "build", Subject: "build", Steps: []saga.Step{
		{Name: "elevate", Role: "contractor", TimeoutTicks: 3},
	}}
}

func TestWorkingUntilIsDue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		until int64
		want  saga.Status
	}{
		{"work equal to the step timeout completes", 3, saga.Completed},
		{"one tick longer times out", 4, saga.TimedOut},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, contractorDef())
			h.out.Reset()
			_, err := h.e.StartWith("x", "build", nil, saga.StartOptions{Rank: 1}, &h.out)
			require.NoError(t, err)
			h.record()
			w := messages.ReplyTo(ptr(h.last("x"), true), messages.Working, "")
			w.Until = tc.until
			require.NoError(t, h.apply(w))
			require.Equal(t, 0, h.e.Summary().Due, "working until a later tick is not due")
			for tick := int64(1); tick < tc.until && tick <= 3; tick++ {
				h.tick(tick)
				require.Equal(t, 0, h.e.Summary().Due, "tick %d", tick)
				final := messages.ReplyTo(ptr(h.last("x"), true), messages.OK, "")
				require.ErrorIs(t, h.apply(final), saga.ErrEarly, "tick %d: the answer before its declared tick waits", tick)
			}
			h.tick(tc.until)
			if tc.want == saga.TimedOut {
				require.Equal(t, []string{"x/elevate/compensate"}, h.released())
				require.NoError(t, h.reply(h.last("x"), messages.OK, "", nil))
			} else {
				require.Equal(t, 1, h.e.Summary().Due, "the working command is due at its declared tick")
				require.NoError(t, h.apply(messages.ReplyTo(ptr(h.last("x"), true), messages.OK, "")))
			}
			require.Equal(t, tc.want, h.get("x").Status)
			require.Equal(t, 0, h.e.Summary().Due)
		})
	}
}

// TestAnswerHeldBackOutlastsAJump: a working command's final answer that
// came before the tick its agent declared, within the step's time, is in
// hand. A tick that moves the clock past the step's (and the saga's)
// timeout at once leaves it due, and it is applied when offered again; one
// tick later, an answer never offered again times the saga out.
func TestAnswerHeldBackOutlastsAJump(t *testing.T) {
	for _, tc := range []struct {
		name       string
		until      int64 // the build step (timeout 3, sent at tick 0) is worked on until this tick
		heldBack   bool  // its final answer came before until
		jump       int64 // the next tick after 0
		offerAgain bool  // the answer held back is offered again after the jump
		want       saga.Status
	}{
		{"held back before until 2, the clock jumps to 10", 2, true, 10, true, saga.Completed},
		{"held back before until 3, the step's last tick, the clock jumps to 4", 3, true, 4, true, saga.Completed},
		{"held back, never offered again: the next tick times it out", 2, true, 10, false, saga.TimedOut},
		{"no answer yet: the jump times it out", 2, false, 10, false, saga.TimedOut},
		{"held back before until 4, past the step's time: timed out", 4, true, 10, false, saga.TimedOut},
	} {
		for _, rank := range []int64{0, 1} {
			t.Run(fmt.Sprintf("%s, rank %d", tc.name, rank), func(t *testing.T) {
				h := newHarness(t, contractorDef())
				h.out.Reset()
				_, err := h.e.StartWith("x", "build", nil, saga.StartOptions{Rank: rank}, &h.out)
				require.NoError(t, err)
				h.record()
				w := messages.ReplyTo(ptr(h.last("x"), true), messages.Working, "")
				w.Until = tc.until
				require.NoError(t, h.apply(w))
				final := messages.ReplyTo(ptr(h.last("x"), true), messages.OK, "")
				if tc.heldBack {
					require.ErrorIs(t, h.apply(final), saga.ErrEarly)
				}

				h.tick(tc.jump)
				if tc.want == saga.Completed || tc.heldBack && tc.until < 4 {
					require.Empty(t, h.released(), "nothing timed out")
					require.Equal(t, saga.InProgress, h.get("x").Status)
					require.Equal(t, 1, h.e.Summary().Due, "the answer in hand is due")
				}
				if tc.offerAgain {
					require.NoError(t, h.apply(final))
				} else if tc.heldBack && tc.until < 4 {
					h.tick(tc.jump + 1)
				}
				if tc.want == saga.TimedOut {
					require.Equal(t, []string{"x/elevate/compensate"}, h.released())
					require.NoError(t, h.reply(h.last("x"), messages.OK, "", nil))
				}
				x := h.get("x")
				require.Equal(t, tc.want, x.Status, x.Error)
				require.Equal(t, 0, h.e.Summary().Due)
			})
		}
	}
}

func TestResumeReleasesTheRoundInProgress(t *testing.T) {
	h := newHarness(t, subsidyDef())
	for i, id := range []saga.ID{"a", "b", "c"} {
		h.startRanked(id, int64(i+1), 1)
	}
	h.tick(1)
	require.NoError(t, h.reply(h.last("b"), messages.OK, "", nil))
	// b's next command is held; a and c owe round 1 an answer.
	stored := map[saga.ID]saga.Execution{}
	for _, id := range []saga.ID{"a", "b", "c"} {
		stored[id] = h.get(id)
	}

	r := newHarness(t, subsidyDef())
	for _, id := range []saga.ID{"c", "b", "a"} {
		require.NoError(t, r.e.Restore(stored[id], 1))
	}
	r.out.Reset()
	r.e.Resume(&r.out)
	require.Empty(t, r.out.Commands)
	var out []string
	for _, c := range r.e.Outstanding() {
		out = append(out, c.SagaID+"/"+c.Step)
	}
	require.Equal(t, []string{"a/household_applies", "c/household_applies"}, out, "only the round in progress goes out again, in rank order")
	for _, id := range []saga.ID{"c", "a"} {
		cmd, ok := r.e.Command(id)
		require.True(t, ok)
		r.out.Reset()
		require.NoError(t, r.e.ApplyReply(messages.ReplyTo(&cmd, messages.OK, ""), t0, &r.out))
		r.record()
	}
	require.Equal(t, []string{"a/government_evaluates/execute", "b/government_evaluates/execute", "c/government_evaluates/execute"}, r.released())
}

// ptr returns a pointer to c; ok must be true.
func ptr(c messages.Command, ok bool) *messages.Command {
	if !ok {
		panic("no command")
	}
	return &c
}

// TestBeginScheduledKeepsTheRound: a and b, scheduled for tick 2, began at
// it in round 3, behind x, which still owed round 2 an answer. Restored as
// they were stored when scheduled (pending), they begin again in round 3,
// and the restored engine releases what the first one does.
func TestBeginScheduledKeepsTheRound(t *testing.T) {
	h := newHarness(t, subsidyDef())
	h.startRanked("x", 1, 1)
	h.tick(1)
	require.NoError(t, h.reply(h.last("x"), messages.OK, "", nil))
	h.startRanked("a", 2, 2)
	h.startRanked("b", 3, 2)
	stored := map[saga.ID]saga.Execution{"x": h.get("x"), "a": h.get("a"), "b": h.get("b")}
	h.tick(2)
	require.Empty(t, h.released(), "a and b wait for x's round")
	require.Equal(t, int64(3), h.e.TickRound())

	r := newHarness(t, subsidyDef())
	for _, id := range []saga.ID{"b", "x", "a"} {
		require.NoError(t, r.e.Restore(stored[id], 2))
	}
	r.out.Reset()
	require.Equal(t, []saga.ID{"a", "b"}, r.e.BeginScheduled(2, h.e.TickRound(), &r.out))
	require.Len(t, r.out.Changed, 4, "each began, and sent its first command")
	for _, id := range []saga.ID{"a", "b"} {
		want, got := h.get(id), r.get(id)
		require.Equal(t, want.Status, got.Status, id)
		require.Equal(t, want.StartedTick, got.StartedTick, id)
		require.Equal(t, want.Round, got.Round, id)
		require.Equal(t, want.History, got.History, id)
	}
	r.out.Reset()
	r.e.Resume(&r.out)
	var again []string
	for _, c := range r.e.Outstanding() {
		again = append(again, c.SagaID+"/"+c.Step)
	}
	require.Equal(t, []string{"x/government_evaluates"}, again, "round 2 goes out again, and only it")

	for _, e := range []*harness{h, r} {
		e.out.Reset()
		require.NoError(t, e.e.ApplyReply(messages.ReplyTo(ptr(e.e.Command("x")), messages.OK, ""), t0, &e.out))
	}
	require.Equal(t, []string{"x/budget_deducted/execute", "a/household_applies/execute", "b/household_applies/execute"}, h.released())
	require.Equal(t, h.released(), r.released())
}

// TestBeginScheduledOnlyWhenItCan: outside a recovery, for a clock that is
// not the engine's, or with no round, nothing begins.
func TestBeginScheduledOnlyWhenItCan(t *testing.T) {
	h := newHarness(t, subsidyDef())
	h.startRanked("a", 1, 2)
	stored := h.get("a")
	require.Empty(t, h.e.BeginScheduled(0, 1, &h.out), "not recovering")

	r := newHarness(t, subsidyDef())
	require.NoError(t, r.e.Restore(stored, 1))
	require.Empty(t, r.e.BeginScheduled(2, 1, &r.out), "the clock is at 1")
	require.Empty(t, r.e.BeginScheduled(1, 1, &r.out), "a is scheduled for 2")
	require.NoError(t, r.e.Restore(saga.Execution{ID: "later", Definition: "subsidy", Status: saga.Pending, Current: -1,
		StartedTick: 3, History: []saga.Transition{{Tick: 3, Status: saga.Pending}}}, 1))
	require.Equal(t, int64(3), r.e.Tick(), "a saga stored at tick 3, whose clock was not")
	require.Empty(t, r.e.BeginScheduled(2, 0, &r.out), "no round stored")
	require.Equal(t, saga.Pending, r.get("a").Status)
	require.Equal(t, []saga.ID{"a"}, r.e.BeginScheduled(2, 1, &r.out))
	x := r.get("a")
	require.Equal(t, saga.InProgress, x.Status)
	require.Equal(t, int64(2), x.StartedTick, "it began at the stored clock's tick")
	require.Equal(t, int64(2), x.DispatchedTick)
	require.Equal(t, int64(3), r.e.Tick())
}

// TestAbortOfAScheduledSaga: a saga scheduled for a later tick that an
// operator aborts ends rolled back at once, with nothing to compensate,
// and does not begin when its tick comes; its neighbours run as before.
func TestAbortOfAScheduledSaga(t *testing.T) {
	h := newHarness(t, subsidyDef())
	h.startRanked("a", 1, 1)
	h.startRanked("b", 2, 1)
	h.out.Reset()
	require.NoError(t, h.e.Rollback("a", "operator", &h.out))
	h.record()
	require.Empty(t, h.released())
	var statuses []string
	for _, ev := range h.out.Events {
		statuses = append(statuses, ev.SagaID+" "+ev.Status)
	}
	require.Equal(t, []string{"a compensating", "a rolled_back"}, statuses)
	x := h.get("a")
	require.Equal(t, saga.RolledBack, x.Status)
	require.Equal(t, "aborted: operator", x.Error)
	require.Empty(t, x.Compensated)

	h.tick(1)
	require.Equal(t, []string{"b/household_applies/execute"}, h.released())
}
