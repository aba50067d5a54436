package coordinator

// Which transition is stored, and which is replayed from records
//
// The engine (package saga) reports every saga it changes in
// Outbox.Changed, and the safe thing is to store each one before its
// commands go out: then a restarted coordinator finds every saga as it
// left it. This file holds the two exceptions, which save a stored state per
// step and one per scheduled start, and everything that keeps them safe.
//
// The first exception. An agent built on package participant records the result
// of each command in its barrier record, and the coordinator reads that
// record as the answer (records.go). When such an answer is an execute
// that succeeded, and all it did was send the next step's first execute
// (no event, no other change), the saga is not stored: its record can be
// read again. [applyRecord] makes that decision, with [onlyAdvanced]; the
// saga's command then goes out beside the batch's
// writes instead of after them. Everything else is stored: a start, a
// reply (a foreign agent's answer, or a duplicate, may have no record
// behind it), a failure, a retry, a compensation, a finish, a tick. A saga
// that changed in another way in the same batch is stored too.
//
// What a restart does about it. The stored state of an executing saga may
// then be some steps behind: the steps that were answered by record since.
//
//   - [renumber]: commands may have been sent after the stored state, at
//     most one per later step, each with the next sequence number. The restored saga numbers its commands past them, so that a
//     late answer to one of them is never taken for an answer to its own.
//     A compensating saga is always stored, so its number is kept.
//   - [Coordinator.catchUp]: before it serves, the restarted coordinator
//     reads each executing saga's record of its outstanding step, applies
//     the recorded answer as if it had just arrived, and repeats until the
//     saga reaches a step with no final record: the one in flight. The
//     replay is committed by the same rule: what it only advanced stays
//     in the records, the rest is stored.
//   - Then every outstanding command is sent again; an agent's barrier
//     answers one it has already applied from its record.
//
// The second exception. A saga scheduled for a later tick is stored
// pending when it is scheduled. When the tick comes and all it does is
// begin (its first step's first execute, in the tick's first round), it
// is not stored again: [onlyBegan] decides. The clock is stored in the
// same commit, before the commands go out, with the tick's first round
// ([storedClock]). A restarted coordinator finds the saga pending at the
// stored tick, and begins it again in that round
// ([Coordinator.beginScheduled], saga.Engine.BeginScheduled), before it
// catches up; so the rounds, and the order of the commands, are those of
// the run before. Such a saga is stored when the clock next moves, if it
// has not been stored by then: the clock then no longer says in which
// round it began.
//
// The engine knows none of this: it reports changes, and this file decides
// which of them may wait for a record, or the clock, to be read again.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// applyRecord applies reply, the answer that a barrier record gives to a
// saga's outstanding command, with apply (the engine's ApplyReply, or the
// coordinator's observed version of it), and leaves the saga unstored when
// [onlyAdvanced] says the record alone can replay the change.
func applyRecord(apply func(messages.Reply, time.Time, *saga.Outbox) error, reply messages.Reply, now time.Time, out *saga.Outbox) error {
	changed, commands, events := len(out.Changed), len(out.Commands), len(out.Events)
	if err := apply(reply, now, out); err != nil {
		return err
	}
	if onlyAdvanced(reply, out.Changed[changed:], out.Commands[commands:], len(out.Events) > events) {
		out.Changed = out.Changed[:changed]
	}
	return nil
}

// onlyAdvanced reports whether applying reply did nothing but move its
// saga on to the first execute of the next step: changed and commands are
// what the reply added to the outbox, and evented whether it added events.
//
// A ranked saga's next command waits for its round, or goes out with the
// whole round its answer completed: for it, the commands are not looked at,
// but its own outstanding command is.
func onlyAdvanced(reply messages.Reply, changed []*saga.Execution, commands []messages.Command, evented bool) bool {
	if reply.Action != messages.Execute || reply.Outcome != messages.OK || evented || len(changed) != 1 {
		return false
	}
	x := changed[0]
	if x.Rank > 0 {
		cmd, ok := x.Command()
		return ok && x.ID == reply.SagaID && x.Status == saga.InProgress &&
			cmd.Action == messages.Execute && cmd.Attempt == 1 && cmd.Step != reply.Step
	}
	if len(commands) != 1 {
		return false
	}
	cmd := &commands[0]
	return x.ID == reply.SagaID && cmd.SagaID == reply.SagaID && x.Status == saga.InProgress &&
		cmd.Action == messages.Execute && cmd.Attempt == 1 && cmd.Step != reply.Step
}

// renumber moves the sequence number of x, a saga of definition d read
// from the saga log or the bucket, past the commands its previous coordinator may have
// sent after storing it: at most one per step, when x is executing, or
// pending with its start tick come by tick, the clock stored.
func renumber(x *saga.Execution, d *saga.Definition, tick int64) {
	executing := !x.Status.Terminal() && x.Action == messages.Execute
	began := x.Status == saga.Pending && x.StartedTick <= tick
	if executing || began {
		x.Seq += len(d.Steps)
	}
}

// onlyBegan reports whether x, changed in a commit that stores the clock
// at tick with round, its first round, did nothing but begin at tick the
// start it was stored pending for (stored): its outstanding command is its
// first step's first execute, and a ranked saga's is in round. Restored
// pending, it begins again just so.
func onlyBegan(x *saga.Execution, tick, round int64, stored bool) bool {
	return stored && x.Status == saga.InProgress && x.StartedTick == tick && x.Current == 0 &&
		x.Action == messages.Execute && x.Attempt == 1 && x.Awaiting && x.RetryAt.IsZero() &&
		(x.Rank == 0 || x.Round == round)
}

// withBegun returns changed with the sagas of c.begun that it lacks and
// that are still active: the commit stores the clock at a later tick, so
// they must be stored as they are now.
func (c *Coordinator) withBegun(changed []*saga.Execution) []*saga.Execution {
	if len(c.begun) == 0 {
		return changed
	}
	changed = changed[:len(changed):len(changed)]
	for id := range c.begun {
		if c.changed[id] {
			continue
		}
		x, err := c.engine.Get(id)
		if err != nil || x.Status.Terminal() {
			delete(c.begun, id)
			continue
		}
		changed = append(changed, &x)
		c.changed[id] = true
	}
	return changed
}

// beginScheduled begins, in a recovery, the sagas stored pending for tick,
// the clock stored, that began at it in round (see [onlyBegan]), stores
// them, and returns their ids for the catch-up.
func (c *Coordinator) beginScheduled(ctx context.Context, tick, round int64) ([]string, error) {
	var out saga.Outbox
	ids := c.engine.BeginScheduled(tick, round, &out)
	if len(ids) == 0 {
		return nil, nil
	}
	// Their commands go out with every outstanding one after the
	// recovery; their events went out when they began.
	out.Commands, out.Events = nil, nil
	if err := c.commit(ctx, &out); err != nil {
		return nil, fmt.Errorf("begin scheduled sagas: %w", err)
	}
	c.log.Info("began the sagas scheduled for the stored tick", "tick", tick, "round", round, "sagas", len(ids))
	return ids, nil
}

// storedClock is the value of [messages.ClockKey]: the tick, and its first
// round (saga.Engine.TickRound). A clock stored as a bare tick, as before
// the round was stored, has no round.
type storedClock struct {
	Tick  int64 `json:"tick"`
	Round int64 `json:"round,omitempty"`
}

// parseClock reads a stored clock, in either form.
func parseClock(data []byte) (storedClock, error) {
	var ck storedClock
	var err error
	if len(data) > 0 && data[0] == '{' {
		err = json.Unmarshal(data, &ck)
	} else {
		ck.Tick, err = strconv.ParseInt(string(data), 10, 64)
	}
	if err == nil && (ck.Tick < 0 || ck.Round < 0) {
		err = fmt.Errorf("tick %d, round %d: %w", ck.Tick, ck.Round, messages.ErrBadRequest)
	}
	return ck, err
}

// catchUp brings each saga restored while executing (ids) up to date: a
// step answered ok by a record that only led to the next one was not
// stored (see [applyRecord]), so the stored state may be steps
// behind. It reads the agents' record logs once, and applies again the
// answers they recorded for the sagas' steps, a step of every saga per
// round, until each saga reaches a step
// with no final record: the one in flight. What must be stored is stored;
// the commands are left to the resend of every outstanding command that
// follows.
func (c *Coordinator) catchUp(ctx context.Context, ids []string) error {
	type read struct {
		cmd  messages.Command
		role string
		rec  messages.Record
		err  error
	}
	var out saga.Outbox
	replayed := 0
	recs, err := c.recordsOf(ctx, ids)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	// A branch the logs hold nothing of is read from the old branch
	// subject only for a role whose state stream holds such records.
	var legacy map[string]bool
	if len(ids) > 0 {
		legacy = c.legacyRoles(ctx, c.roles())
	}
	for len(ids) > 0 {
		var reads []read
		for _, id := range ids {
			if cmd, ok := c.engine.Command(id); ok && cmd.Action == messages.Execute {
				reads = append(reads, read{cmd: cmd, role: c.roleOf(id, cmd.Saga, cmd.Step)})
			}
		}
		// The reads of a round go out together, at most catchUpReads at
		// a time; the engine is used only between rounds.
		var wg sync.WaitGroup
		sem := make(chan struct{}, catchUpReads)
		for i := range reads {
			r := &reads[i]
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				var ok bool
				if r.rec, ok = recs[r.role+" "+messages.RecordKey(r.cmd.SagaID, r.cmd.Step)]; !ok && legacy[r.role] {
					r.rec, r.err = c.readLegacyRecord(ctx, r.role, r.cmd.SagaID, r.cmd.Step)
				}
			})
		}
		wg.Wait()
		ids = nil
		for _, r := range reads {
			if errors.Is(r.err, messages.ErrBadRequest) {
				c.log.Error("malformed record: the step is taken as in flight", "saga_id", r.cmd.SagaID, "step", r.cmd.Step, "err", r.err)
				continue
			}
			if r.err != nil {
				return fmt.Errorf("catch up %s: %w", r.cmd.SagaID, r.err)
			}
			reply, ok, err := recordAnswer(&r.rec, &r.cmd)
			if err != nil {
				c.refuse("record", r.role, slog.LevelWarn, "saga_id", r.cmd.SagaID, "step", r.cmd.Step, "action", r.cmd.Action, "why", err.Error())
				continue
			}
			if !ok {
				continue
			}
			if err := applyRecord(c.engine.ApplyReply, reply, time.Now(), &out); err != nil {
				if errors.Is(err, saga.ErrEarly) {
					continue // recorded before its declared tick: applied when that comes
				}
				return fmt.Errorf("catch up %s: %w", r.cmd.SagaID, err)
			}
			replayed++
			ids = append(ids, r.cmd.SagaID)
		}
	}
	out.Commands = out.Commands[:0]
	if err := c.commit(ctx, &out); err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if replayed > 0 {
		c.log.Info("caught up from the agents' records", "steps", replayed, "stored", len(out.Changed))
	}
	return nil
}

// catchUpReads bounds the records read at once during a catch-up.
const catchUpReads = 64
