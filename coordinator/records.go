package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/pull"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// An agent built on natsaga's participant package records the result of
// each command it applies in its barrier (a [messages.Record] under
// [messages.RecordKey] in its role's [messages.RecordStream], many records
// a message) and sends no reply for it: the coordinator reads the record
// as the answer. That saves the agent a stored message
// and a round trip per command. Agents reply on the reply stream for
// everything else: a duplicate, a refusal, a transient error, "working",
// and every answer of a foreign agent.

// roles are the roles named by the steps of every version of the
// definitions the engine knows, sorted.
func (c *Coordinator) roles() []string {
	var roles []string
	for _, d := range c.engine.Versions() {
		for _, r := range d.Roles() {
			if !slices.Contains(roles, r) {
				roles = append(roles, r)
			}
		}
	}
	slices.Sort(roles)
	return roles
}

// openRecords creates or binds the coordinator's consumer of role's barrier
// records and returns an iterator over it. Until an agent of the role has
// created its record stream, it waits.
func (c *Coordinator) openRecords(ctx context.Context, role string) (jetstream.MessagesContext, error) {
	// Every record is read, from the first: a record written before the
	// consumer existed may answer a command sent before it did.
	cfg := jetstream.ConsumerConfig{
		Durable: messages.RecordConsumer, FilterSubjects: []string{messages.RecordSubject(role)},
		DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: c.opts.AckWait, MaxDeliver: -1, MaxAckPending: 65536,
	}
	var cons jetstream.Consumer
	began, told := time.Now(), false
	for waited := false; ; waited = true {
		var err error
		cons, err = c.js.CreateOrUpdateConsumer(ctx, messages.RecordStream(role), cfg)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("records of %s: %w", role, err)
		}
		if !waited {
			c.log.Info("waiting for an agent to create its role's record stream", "role", role)
		}
		if !told && time.Since(began) >= oldAgentsAfter && c.oldAgents(ctx, role) {
			told = true
			c.log.Warn("the role's consumer takes commands, but no agent of the role created its record stream: "+
				"agents before wire version 3 write none, and their answers do not reach this coordinator; "+
				"upgrade every copy of the role (docs/protocol.md, Upgrading to version 3)", "role", role, "waited", oldAgentsAfter)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	if told {
		c.enqueue(ctx, c.sendRoleAgain(role))
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(c.opts.MaxBatch), jetstream.PullExpiry(4*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return nil, fmt.Errorf("records of %s: %w", role, err)
	}
	return it, nil
}

// oldAgents reports whether role looks served by agents before wire
// version 3, which take commands and write their barrier records where
// this coordinator does not read them: the role's command consumer and
// its state stream exist, and (as the caller knows) no record stream. An
// agent of another make that answers with replies (protocol.md, A minimal
// agent) makes the consumer alone, and its answers do reach the
// coordinator.
func (c *Coordinator) oldAgents(ctx context.Context, role string) bool {
	if _, err := c.js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer(role)); err != nil {
		return false
	}
	_, err := c.js.Stream(ctx, messages.StateStream(role))
	return err == nil
}

// sendRoleAgain returns the input that sends role's outstanding commands
// again, once an agent of the role made its record stream after agents
// without one took commands (openRecords): those agents, of an earlier
// version, answered in a way this coordinator does not read, so the
// commands they took would wait for ever. The role's agents now answer
// them again, from their barrier records where they ran already.
func (c *Coordinator) sendRoleAgain(role string) input {
	return func(_ time.Time, out *saga.Outbox) func(error) {
		n := 0
		for _, cmd := range c.engine.Outstanding() {
			if c.engine.StepRole(saga.ID(cmd.SagaID), cmd.Step) == role {
				out.Commands = append(out.Commands, cmd)
				n++
			}
		}
		c.log.Warn("the role's record stream is there now: its outstanding commands sent again, which its agents answer from their records where they ran",
			"role", role, "commands", n)
		return nil
	}
}

// oldAgentsAfter is how long openRecords waits for a role's record stream
// before it says that the role's agents may be of an older version.
var oldAgentsAfter = 10 * time.Second

// pullRecords feeds role's barrier records to the loop until ctx ends.
func (c *Coordinator) pullRecords(ctx context.Context, role string) {
	open := func(ctx context.Context) (jetstream.MessagesContext, error) { return c.openRecords(ctx, role) }
	// Records pulled but not applied are delivered again to the next
	// coordinator, so the iterator stops at once on shutdown.
	if err := pull.Loop(ctx, ctx, c.log, pull.Options{Closed: c.nc.IsClosed}, open, func(m jetstream.Msg) {
		if in := c.recordInput(m); in != nil {
			c.enqueue(ctx, in)
		}
	}); err != nil {
		c.log.Error("records no longer pulled", "role", role, "err", err)
	}
}

// recordInput returns the input that applies each barrier record of a
// message of a role's record log as the answer to the command its saga
// has outstanding for that step, if the record holds a final result for
// that command's action; any other record is left. The message is acknowledged once
// what its records led to is committed, or offered again later when one
// of them came before its time. A message that is not a log's is dropped
// here, and there is no input (nil).
//
// The message and its records are decoded here, on the goroutine that
// pulled it, and applied on the loop, which owns the engine: the loop is
// what every saga waits for, and decoding took about half of its time
// applying records (a CPU profile of floodsim's coordinator).
func (c *Coordinator) recordInput(m jetstream.Msg) input {
	role, ok := messages.ParseRecordSubject(m.Subject())
	if !ok || !messages.ValidToken(role) {
		c.log.Error("dropping a message on a subject that names no role's records", "subject", messages.Clip(m.Subject()))
		_ = m.Term()
		return nil
	}
	es, err := kvlog.Decode(m.Data())
	if err != nil {
		c.log.Error("dropping a malformed message of records", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return nil
	}
	rs := make([]readRecord, len(es))
	for i, e := range es {
		rs[i] = c.decodeRecord(e)
	}
	return func(now time.Time, out *saga.Outbox) func(error) {
		if o, ok := c.opts.Observer.(RecordObserver); ok {
			o.RecordsRead(role, len(rs))
		}
		early := false
		var said entriesSaid
		for i := range rs {
			if errors.Is(c.applyRecordEntry(role, &rs[i], now, out, &said), saga.ErrEarly) {
				early = true
			}
		}
		if n := said.n - maxSaidEntries; n > 0 {
			c.log.Warn("records of one message refused or dropped beyond those said (each said at debug)", "role", role, "not_said", n)
		}
		if early {
			// The others were applied; offered again, they are stale.
			return func(error) { _ = m.NakWithDelay(earlyWait(m)) }
		}
		return func(err error) {
			if err == nil {
				_ = m.Ack()
			}
		}
	}
}

// readRecord is one entry of a role's record log, decoded: its branch
// (ok when the key names one) and its record, or why the record could not
// be read.
type readRecord struct {
	key      string
	id, step string
	ok       bool
	rec      messages.Record
	err      error
}

// decodeRecord decodes e, a record of a role's log, without the engine.
func (c *Coordinator) decodeRecord(e kvlog.Entry) readRecord {
	r := readRecord{key: e.Key}
	r.id, r.step, r.ok = messages.ParseRecordKey(e.Key)
	if !r.ok || !messages.ValidToken(r.id) || !messages.ValidToken(r.step) {
		r.ok = false
		return r
	}
	if r.rec, r.err = wirejson.DecodeRecord(e.Value); r.err == nil {
		r.err = c.checkAnswer(e.Value)
	}
	if r.err == nil {
		r.err = r.rec.Check()
	}
	return r
}

// maxSaidEntries is how many records of one message are said refused or
// dropped at their level: one message may hold a thousand records, or,
// forged, tens of thousands, each a line.
const maxSaidEntries = 10

// entriesSaid counts the records of one message said refused or dropped.
type entriesSaid struct{ n int }

// level is the level to say the next at: want for the first
// maxSaidEntries, debug after.
func (s *entriesSaid) level(want slog.Level) slog.Level {
	s.n++
	if s.n > maxSaidEntries {
		return slog.LevelDebug
	}
	return want
}

// applyRecordEntry applies one record of role's log, saying a record it
// refuses or drops at the level said gives; it returns saga.ErrEarly for
// a record that came before its time.
func (c *Coordinator) applyRecordEntry(role string, r *readRecord, now time.Time, out *saga.Outbox, said *entriesSaid) error {
	id, step := r.id, r.step
	if !r.ok {
		c.log.Log(context.Background(), said.level(slog.LevelError), "dropping a record whose key names no branch", "role", role, "key", messages.Clip(r.key))
		return nil
	}
	cmd, ok := c.engine.Command(id)
	if !ok || cmd.Step != step {
		if !c.owns(role, step) {
			c.refuse("record", role, said.level(slog.LevelWarn), "saga_id", id, "step", step, "why", "the step is not one of the role's")
		} else {
			c.log.Debug("record answers nothing outstanding", "saga_id", id, "step", step)
		}
		return nil
	}
	if owner := c.roleOf(id, cmd.Saga, step); owner != role {
		c.refuse("record", role, said.level(slog.LevelWarn), "saga_id", id, "step", step, "why", "the step belongs to role "+owner)
		if res := r.rec.Result(cmd.Action); r.err == nil && res != nil && res.Seq == cmd.Seq {
			c.sendAgain(cmd, role, owner)
		}
		return nil
	}
	if r.err != nil {
		c.log.Log(context.Background(), said.level(slog.LevelError), "dropping malformed record", "role", role, "key", r.key, "err", r.err)
		return c.answerMalformed(cmd, r.err, now, out)
	}
	reply, ok, err := recordAnswer(&r.rec, &cmd)
	if err != nil {
		c.refuse("record", role, said.level(slog.LevelWarn), "saga_id", id, "step", step, "action", cmd.Action, "why", err.Error())
		return nil
	}
	if !ok {
		return nil // a claim (agents before December 2026 wrote one), or the other action's result
	}
	err = applyRecord(c.applyAnswer, reply, now, out)
	switch {
	case errors.Is(err, saga.ErrEarly):
		c.log.Debug("early record held back", "saga_id", id, "step", step, "err", err)
		return err
	case err != nil:
		c.log.Warn("record not applied", "saga_id", id, "step", step, "err", err)
	}
	return nil
}

// answerMalformed answers cmd, the command in flight, with an error when
// it is a compensation: its agent's answer (a record of its branch, or a
// reply naming it) is one the coordinator cannot take (too large, not
// UTF-8, a result no answer may give). Dropped alone, it would leave cmd
// unanswered when its agent answers no other way, as natsaga's agents do
// once they have recorded a result: an execute till its step times out,
// as it does for any answer not given, but a compensation, which never
// times out, for ever. Answered so, the compensation's retries follow,
// then the saga's failure, which an operator sees, and retries once the
// agent's record is repaired. An answer of an earlier attempt counts
// against the attempt in flight. It returns saga.ErrEarly when cmd's
// agent said it works until a later tick: held back like an answer.
func (c *Coordinator) answerMalformed(cmd messages.Command, why error, now time.Time, out *saga.Outbox) error {
	if cmd.Action != messages.Compensate {
		return nil
	}
	reply := messages.ReplyTo(&cmd, messages.Error, messages.ClipReason("its agent's answer was malformed: "+why.Error()))
	err := c.applyAnswer(reply, now, out)
	switch {
	case err == nil:
		c.log.Warn("command answered error: its agent's answer was malformed", "saga_id", cmd.SagaID, "step", cmd.Step,
			"action", cmd.Action, "attempt", cmd.Attempt, "err", why)
	case errors.Is(err, saga.ErrEarly):
		return err
	default:
		c.log.Warn("malformed answer not applied", "saga_id", cmd.SagaID, "step", cmd.Step, "err", err)
	}
	return nil
}

// recordAnswer returns the reply rec's result of cmd's action gives cmd;
// ok is false when rec holds no final result of it (a claim, which agents
// before December 2026 wrote, or only the other action's result). It
// returns an error for a result whose seq is of no command the
// coordinator sent for the saga up to cmd: a record it must refuse.
func recordAnswer(rec *messages.Record, cmd *messages.Command) (reply messages.Reply, ok bool, err error) {
	reply, ok = rec.Answer(cmd)
	if !ok {
		return reply, false, nil
	}
	if res := rec.Result(cmd.Action); res.Seq > cmd.Seq || res.Seq < 1 {
		return reply, false, fmt.Errorf("seq %d, command in flight has seq %d", res.Seq, cmd.Seq)
	}
	return reply, true, nil
}

// owns reports whether step is a step of role in any version of any of
// the coordinator's definitions.
func (c *Coordinator) owns(role, step string) bool {
	for _, d := range c.engine.Versions() {
		if st, ok := d.Step(step); ok && st.Role == role {
			return true
		}
	}
	return false
}

// refuse counts and logs at level an answer (a "record" or a "reply")
// that does not come from the role owning its step, or does not match the
// command in flight: role is the role it came from.
func (c *Coordinator) refuse(kind, role string, level slog.Level, args ...any) {
	c.refused.Add(1)
	c.log.Log(context.Background(), level, kind+" refused: it does not answer the command in flight from the role owning the step",
		append([]any{"from_role", role}, args...)...)
}

// Resending a command that an agent of the wrong role took: the first
// after resendFirst, each next one twice as late, up to resendMost.
const (
	resendFirst = time.Second
	resendMost  = 30 * time.Second
)

// sendAgain sends cmd, the command in flight, again later: an agent of
// role, which does not own cmd's step (owner does), took it from the
// command stream (it serves the step by mistake, and its consumer holds
// the step's subjects) and recorded an answer, which is refused. Dropped
// with its answer, cmd would wait for ever, also once the right agent
// serves the step: it is sent again after resendFirst, and while its
// answers keep being refused, at growing intervals up to resendMost, for
// as long as it is in flight. It runs on the loop, which alone uses
// c.resent.
func (c *Coordinator) sendAgain(cmd messages.Command, role, owner string) {
	last, ok := c.resent[cmd.SagaID]
	if ok && last.due {
		return // to be sent again already
	}
	wait := resendFirst
	if ok && last.seq == cmd.Seq {
		wait = min(2*last.wait, resendMost)
	}
	c.resent[cmd.SagaID] = resent{seq: cmd.Seq, wait: wait, due: true}
	c.log.Warn("command taken by an agent of a role that does not own its step: sending it again", "saga_id", cmd.SagaID,
		"step", cmd.Step, "action", cmd.Action, "taken_by", role, "owner", owner, "in", wait)
	time.AfterFunc(wait, func() {
		c.enqueue(context.Background(), func(_ time.Time, out *saga.Outbox) func(error) {
			now, ok := c.engine.Command(cmd.SagaID)
			if !ok || now.Seq != cmd.Seq {
				delete(c.resent, cmd.SagaID) // answered, or ended
				return nil
			}
			c.resent[cmd.SagaID] = resent{seq: cmd.Seq, wait: wait}
			out.Commands = append(out.Commands, now)
			return nil
		})
	})
}

// resent is the last resend of a saga's command in flight (sendAgain),
// and whether the next is due; it is dropped when the saga ends.
type resent struct {
	seq  int
	wait time.Duration
	due  bool
}

// Refused returns how many records and replies the coordinator refused
// because they came from a role that does not own the step they name, or
// did not match the command in flight (see docs/guarantees.md). It is safe
// for concurrent use.
func (c *Coordinator) Refused() int64 { return c.refused.Load() }

// roleOf is the role of step in the definition saga id runs by: its own
// version, which a definition registered since may have changed. For a
// saga the coordinator does not hold, it is the role in the latest version
// of sagaType; "" when there is no such step.
func (c *Coordinator) roleOf(id, sagaType, step string) string {
	if role := c.engine.StepRole(id, step); role != "" {
		return role
	}
	if d, ok := c.engine.Definition(sagaType); ok {
		if st, ok := d.Step(step); ok {
			return st.Role
		}
	}
	return ""
}

// subjectRole is the role whose permissions let it publish on the reply
// subject of step in sagaType: roleOf when saga id is a sagaType (or not
// held), and otherwise the role of step in the latest version of
// sagaType, whatever saga id runs by; "" when no role owns the subject.
func (c *Coordinator) subjectRole(id, sagaType, step string) string {
	if cmd, ok := c.engine.Command(id); ok && cmd.Saga != sagaType {
		id = ""
	}
	return c.roleOf(id, sagaType, step)
}

// recordsOf reads the record log of every role once, to its end, and
// returns the records it holds of the sagas of ids, by role and
// [messages.RecordKey]. A role whose agents have not created their record
// stream yet has none.
func (c *Coordinator) recordsOf(ctx context.Context, ids []string) (map[string]messages.Record, error) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	recs := map[string]messages.Record{}
	for _, role := range c.roles() {
		err := kvlog.Scan(ctx, c.js, messages.RecordStream(role), messages.RecordSubject(role), func(seq uint64, es []kvlog.Entry, err error) {
			if err != nil {
				c.log.Error("skipping a malformed message of records", "role", role, "seq", seq, "err", err)
				return
			}
			for _, e := range es {
				id, _, ok := messages.ParseRecordKey(e.Key)
				if !ok || !want[id] {
					continue
				}
				// Checked as a record read while running is.
				r := c.decodeRecord(e)
				if r.err != nil {
					c.log.Error("skipping a malformed record", "role", role, "key", messages.Clip(e.Key), "err", r.err)
					continue
				}
				recs[role+" "+e.Key] = r.rec
			}
		})
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("records of %s: %w", role, err)
		}
	}
	return recs, nil
}

// readLegacyRecord returns role's barrier record of step of saga id as
// agents before the record log kept it, in the role's state stream; an
// empty record when there is none, or no agent of the role has created
// its stream.
func (c *Coordinator) readLegacyRecord(ctx context.Context, role, id, step string) (messages.Record, error) {
	m, err := c.lastLegacy(ctx, role, messages.BranchSubject(role, id, step))
	if err != nil || m == nil {
		return messages.Record{}, err
	}
	rec, err := wirejson.DecodeRecord(m.Data)
	if err == nil {
		err = rec.Check()
	}
	return rec, err
}

// legacyRoles returns the roles of roles whose state stream holds records
// of agents before the record log: one read each, for the last of them. A
// role whose read fails is taken to hold some.
func (c *Coordinator) legacyRoles(ctx context.Context, roles []string) map[string]bool {
	legacy := map[string]bool{}
	for _, role := range roles {
		m, err := c.lastLegacy(ctx, role, messages.BranchSubjects(role))
		if err != nil {
			c.log.Warn("records of agents before the log not checked; each is read", "role", role, "err", err)
		}
		legacy[role] = err != nil || m != nil
	}
	return legacy
}

// lastLegacy returns the last message on subject, a subject of records of
// agents before the record log, in role's state stream: nil when there is
// none, or no agent of the role has created its stream.
func (c *Coordinator) lastLegacy(ctx context.Context, role, subject string) (*nats.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := c.nc.RequestWithContext(ctx, messages.DirectGetSubject(messages.StateStream(role), subject), nil)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", subject, err)
	}
	switch status := m.Header.Get("Status"); status {
	case "":
		return m, nil
	case "404":
		return nil, nil
	default:
		return nil, fmt.Errorf("read %s: status %s %s", subject, status, m.Header.Get("Description"))
	}
}
