package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/streams"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// ErrNoJetStream is returned when the NATS server has no JetStream: an
// agent refuses to run without a durable store.
var ErrNoJetStream = errors.New("natsaga agents need JetStream: start nats-server with -js (or jetstream {} in its config)")

// ErrUnavailable marks a failure to read or write the store itself (the
// server is unreachable or slow), or a branch another command is still
// writing. Do returns such errors instead of a reply: the command is then
// delivered again, and the saga's retry budget is left alone.
var ErrUnavailable = errors.New("store unavailable")

// ErrTooManyWrites is the reason [Store.Do] gives, in an Error reply, to an
// action that writes more than one state value: [agent.ErrTooManyWrites].
var ErrTooManyWrites = agent.ErrTooManyWrites

// ErrConflict is returned by [Store.Do] when the optimistic retries of one
// command were exhausted by concurrent writers. It is transient.
var ErrConflict = errors.New("too many concurrent updates")

// Record is a branch's barrier record: what happened to one step of one
// saga at this role. It is the wire type [messages.Record].
type Record = messages.Record

// Result is the recorded result of one action of a branch.
type Result = messages.Result

// Store is one role's durable state and branch barrier, kept in the
// streams [messages.StateStream] (the state values) and
// [messages.RecordStream] (the barrier records) of that role. It is safe
// for concurrent use, also by several processes.
//
// The records are a log ([kvlog]): each message holds the records of the
// commands the role's copy committed at once, and each copy reads the whole
// log and follows it. A record is written expecting the revision it was
// read at, as a value is; the copy checks it against the log it has read,
// and the server takes the message only if the log has not moved since.
// A command reads its branch from the log as far as this copy has read
// it: a record missed is caught when the command's own record fails. Before
// it writes a value, it reads the log up to the sequence the value's
// envelope names ([envelope].Records), [Store.branchAfter].
//
// A state value is stored in an envelope that also lists the branches whose
// write to it is not yet acknowledged in their barrier record. An action
// that writes one value commits in two single-message writes, each guarded
// by the sequence it expects: the value with itself in the envelope, then
// its record ([branch.recordWritten] says what happens when another record
// got there first). A crash between them is repaired by the redelivered
// command, which finds itself in the envelope. An action may write at most
// one value: [Store.Do] answers an action that writes more with an Error
// reply ([ErrTooManyWrites]), and records nothing.
//
// Agents before this one claimed the branch first, with a "pending"
// record; such a claim is still read, and still makes a compensation wait
// ([agent.Wait]).
type Store struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	role   string
	// maxConflicts bounds the optimistic retries of one command.
	maxConflicts int
	// maxRecordValues bounds the records the log holds in memory
	// (Options.MaxRecordValues; 0: kvlog's default).
	maxRecordValues int
	conflicts       atomic.Int64
	// logger reports the record log's messages that do not decode (nil:
	// slog's default); an agent sets its own.
	logger *slog.Logger
	// maxPayload is the server's payload limit when the store was made:
	// outputs, values and record messages are held to what it takes.
	maxPayload int64

	// Within one process, transactions on the same state key take turns
	// (keys, which holds the keys of the transactions under way), and the
	// last envelope this process wrote or read is reused (cache), so a hot
	// key such as a budget costs no read per command. settled lists, per
	// value, the branches whose result is recorded, to drop from that
	// value's envelope at its next write. Both hold at most maxCached keys,
	// those written or read last ([recent]): keys come from client data;
	// the cache, values of at most maxCachedBytes too.
	//
	// Letting a value go from the cache is safe: a read it misses goes to
	// the server, as after [Store.forgetAll]; a transaction holds the
	// values it read in its own reads, so one under way is not touched;
	// and a copy that is the role's only writer (exclusive) reads the value
	// from the server, as after forgetAll, which its pin's moves and its
	// conflicts already ask for. Letting a settled list go leaves its
	// names in the value's envelope, where [Store.unsettle] says why that
	// is safe.
	mu      sync.Mutex
	keys    map[string]*keyLock
	cache   recent[cached]
	settled recent[[]string]

	// exclusive is set when this process is the role's only writer (a
	// serial copy, pinned to the role's commands, which empties the cache
	// whenever another copy may have written): the cache then holds what
	// the server holds. Otherwise a value read from the cache that an
	// action does not write is checked against the server before the
	// action's result counts ([Store.checkReads]).
	exclusive bool

	// stateCut names the limits of the state stream cut by hand, found
	// when the store was opened, said when its records are.
	stateCut []string
	// create makes [Store.records] create the role's record stream.
	create   bool
	replicas int
	// logMu guards log, the role's barrier records, opened on first use,
	// and legacy: whether the state stream holds branch records of
	// agents before the log (read, never written).
	logMu  sync.Mutex
	log    *kvlog.Log
	legacy bool
}

type keyLock struct {
	sync.Mutex
	refs int
}

type cached struct {
	env envelope
	seq uint64
}

// envelopeSize is what a cached value holds: its value's bytes, and its
// envelope's names and outputs.
func envelopeSize(c cached) int {
	n := len(c.env.Value)
	for op, out := range c.env.Ops {
		n += len(op)
		for k, v := range out {
			n += len(k) + len(v)
		}
	}
	return n
}

// envelope is how a state value is stored: the value; in Ops the branch
// actions ("<saga_id>/<step>/<action>") that wrote it and have not yet
// recorded their result, with the output each will record; in Records the
// sequence of the role's record log its writer, and every writer before
// it, had read (the record of every action whose name a write dropped
// from Ops is there or before). wirejson reads and writes it.
type envelope = wirejson.StateEnvelope

// stamp sets env.Records for a write of a value read as read: the later of
// what read names and what this process has read of the record log. A
// sequence the log has never reached, even once read to the server's end
// (a value written by hand, or before the log was made anew), is not
// carried on: each write would hand it to the next, and every action
// reading the value would wait for the log to reach it.
func (s *Store) stamp(ctx context.Context, env *envelope, read envelope) {
	env.Records = read.Records
	s.logMu.Lock()
	l := s.log
	s.logMu.Unlock()
	if l == nil {
		return
	}
	if read.Records > l.Last() && l.ReadTo(ctx, read.Records) == nil && read.Records > l.Last() {
		log := s.logger // an agent's names its role
		if log == nil {
			log = slog.Default().With("role", s.role)
		}
		log.Warn("state value names a sequence its role's record log never reached: not carried on",
			"records", read.Records, "log_last", l.Last())
		env.Records = 0
	}
	env.Records = max(env.Records, l.Last())
}

// RecordTTL is how long a message of a role's record log, and so a
// branch's barrier record, is kept. A command outlives its saga by at most
// its redeliveries, so a week is far beyond the last duplicate the record
// must absorb; without an expiry the log would keep the records of every
// saga ever run.
const RecordTTL = 7 * 24 * time.Hour

// RecordStreamConfig is the configuration of role's record stream, with
// replicas copies: a log on one subject whose messages expire after
// [RecordTTL].
func RecordStreamConfig(role string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        messages.RecordStream(role),
		Subjects:    []string{messages.RecordSubject(role)},
		Storage:     jetstream.FileStorage,
		Replicas:    max(replicas, 1),
		MaxAge:      RecordTTL,
		AllowDirect: true,
		Discard:     jetstream.DiscardOld,
	}
}

// StreamConfig is the configuration of role's state stream, with replicas
// copies.
func StreamConfig(role string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              messages.StateStream(role),
		Subjects:          messages.StateSubjects(role),
		Storage:           jetstream.FileStorage,
		Replicas:          max(replicas, 1),
		MaxMsgsPerSubject: 1,
		AllowDirect:       true,
		AllowMsgTTL:       true,
		Discard:           jetstream.DiscardOld,
	}
}

// OpenStore returns role's store, creating its stream when create is set
// (replicas copies) or waiting for it otherwise. It returns an error
// wrapping [ErrNoJetStream] when the server has no JetStream, and another
// when the stream cannot be created or found before ctx ends.
func OpenStore(ctx context.Context, nc *nats.Conn, role string, create bool, replicas int) (*Store, error) {
	if nc == nil {
		return nil, errors.New("open store: no NATS connection (nil)")
	}
	if err := messages.CheckToken("role", role); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", role, err)
	}
	if _, err := js.AccountInfo(ctx); errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return nil, fmt.Errorf("open store %s: %w: %w", role, ErrNoJetStream, err)
	}
	st, cut, err := roleStream(ctx, js, role, StreamConfig(role, replicas), create)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", role, err)
	}
	return &Store{nc: nc, js: js, stream: st, role: role, maxConflicts: 200, maxPayload: nc.MaxPayload(), create: create, replicas: replicas,
		keys: map[string]*keyLock{}, cache: newSizedRecent(maxCached, maxCachedBytes, envelopeSize), settled: newRecent[[]string](maxCached),
		stateCut: cut}, nil
}

// sayCut says at error a stream of the role whose limits were cut by
// hand ([streams.Cut]): the values or barrier records they removed are
// lost, and commands whose records went run again.
func (s *Store) sayCut(stream string, cut []string) {
	if len(cut) == 0 {
		return
	}
	log := s.logger
	if log == nil {
		log = slog.Default()
	}
	log.Error("a stream's limits were cut by hand: what they removed is lost (state values, or barrier records: the commands they answered run again); set back to natsaga's",
		"stream", stream, "cut", strings.Join(cut, "; "))
}

// records returns the role's barrier records, opened on first use: the
// record stream created (when the store was opened to create its streams)
// or waited for, then read to its end.
func (s *Store) records(ctx context.Context) (*kvlog.Log, error) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.log != nil {
		return s.log, nil
	}
	// Said now, with the logger the agent has set since it opened the
	// store.
	s.sayCut(messages.StateStream(s.role), s.stateCut)
	s.stateCut = nil
	_, cut, err := roleStream(ctx, s.js, s.role, RecordStreamConfig(s.role, s.replicas), s.create)
	if err != nil {
		if errors.Is(err, ErrRoleCase) {
			return nil, fmt.Errorf("records of %s: %w", s.role, err)
		}
		return nil, fmt.Errorf("records of %s: %w: %w", s.role, ErrUnavailable, err)
	}
	s.sayCut(messages.RecordStream(s.role), cut)
	// Records that agents before the log kept in the state stream are
	// still read, when there are any.
	m, err := s.last(ctx, messages.BranchSubjects(s.role))
	if err != nil {
		return nil, err
	}
	// A message of records within the server's payload limit (kvlog's
	// own bound, 256 KiB, is over a limit of 64 KiB), less room for its
	// headers.
	l, err := kvlog.Open(ctx, s.js, kvlog.Options{Stream: messages.RecordStream(s.role), Subject: messages.RecordSubject(s.role),
		MaxValues: s.maxRecordValues, Logger: s.logger, MaxBytes: max(int(min(s.maxPayload, 256<<10))-1<<10, 1)})
	if err != nil {
		return nil, fmt.Errorf("records of %s: %w: %w", s.role, ErrUnavailable, err)
	}
	s.log, s.legacy = l, m != nil
	return l, nil
}

// Close stops following the role's barrier records. The store is not to
// be used after.
func (s *Store) Close() {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.log != nil {
		s.log.Close()
	}
}

// ErrRoleCase is returned when a role's stream holds the subjects of
// another role, whose name differs from the role's only in case: a
// role's streams are named by its name in upper case, so the two cannot
// both run on one server.
var ErrRoleCase = errors.New("another role's name differs from this one's only in case")

// roleStream returns role's stream cfg: created or updated to cfg when
// create is set, waited for otherwise; when it updates, cut names the
// limits the stream had that kept less than cfg's ([streams.Cut]). It
// refuses, with [ErrRoleCase], a stream that holds another role's
// subjects, which an update would take from that role.
func roleStream(ctx context.Context, js jetstream.JetStream, role string, cfg jetstream.StreamConfig, create bool) (_ jetstream.Stream, cut []string, _ error) {
	check := func(st jetstream.Stream) error {
		have := st.CachedInfo().Config.Subjects
		if !slices.Equal(have, cfg.Subjects) && strings.EqualFold(strings.Join(have, " "), strings.Join(cfg.Subjects, " ")) {
			return fmt.Errorf("stream %s holds the subjects %v, not role %q's %v: %w", cfg.Name, have, role, cfg.Subjects, ErrRoleCase)
		}
		return nil
	}
	if !create {
		st, err := waitStream(ctx, js, cfg.Name)
		if err != nil {
			return nil, nil, err
		}
		return st, nil, check(st)
	}
	// Created, or there already as asked (internal/streams says why it is
	// not updated then); otherwise checked before it is updated.
	st, err := js.CreateStream(ctx, cfg)
	if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return st, nil, err
	}
	if st, err = js.Stream(ctx, cfg.Name); err != nil {
		return nil, nil, err
	}
	if err := check(st); err != nil {
		return nil, nil, err
	}
	cut = streams.Cut(st.CachedInfo().Config, cfg)
	st, err = js.UpdateStream(ctx, cfg)
	return st, cut, err
}

// waitStream returns the stream name once it exists, waiting while it does
// not or JetStream cannot say for now ([temporary]), until ctx ends: its
// error then wraps ctx's, so that a stop asked for reads as one.
func waitStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	for {
		st, err := js.Stream(ctx, name)
		if err == nil || !errors.Is(err, jetstream.ErrStreamNotFound) && (!temporary(err) || ctx.Err() != nil) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s: %w (last answer: %w)", name, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// gone returns an error wrapping [jetstream.ErrStreamNotFound] when the
// role's state or record stream is not on the server, and nil otherwise,
// also when the server does not answer.
func (s *Store) gone(ctx context.Context) error {
	for _, name := range []string{messages.StateStream(s.role), messages.RecordStream(s.role)} {
		if _, err := s.js.Stream(ctx, name); errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %s: %w", name, err)
		}
	}
	return nil
}

// Role is the role whose state this store holds.
func (s *Store) Role() string { return s.role }

// Written returns how many messages of the role's record log this store
// wrote, and the records they held.
func (s *Store) Written() (messages, records int64) {
	s.logMu.Lock()
	l := s.log
	s.logMu.Unlock()
	if l == nil {
		return 0, 0
	}
	return l.Written()
}

// Conflicts counts the optimistic retries this store has made: commands
// run again, and messages of records the server refused, because another
// copy had written to the role's record log or a value read first.
func (s *Store) Conflicts() int64 {
	s.logMu.Lock()
	l := s.log
	s.logMu.Unlock()
	n := s.conflicts.Load()
	if l != nil {
		n += l.Conflicts()
	}
	return n
}

// Branch returns the barrier record of step of saga, with its revision
// in the role's record log (0 when absent), read after every record the
// server held when it was called.
func (s *Store) Branch(ctx context.Context, sagaID, step string) (Record, uint64, error) {
	l, err := s.synced(ctx)
	if err != nil {
		return Record{}, 0, err
	}
	return s.branchOf(ctx, l, sagaID, step)
}

// branchAfter returns the barrier record of step of saga as [Store.Branch]
// does, read once the record log has been read up to seq, without asking
// the server how far it goes: a record written since may be missed, and
// the record's write, guarded by the revision read, then fails and the
// command runs again. An action reads its branch this way, with the
// sequence its value's envelope names before it writes the value: a run
// of the same action whose name a write dropped from the envelope is
// found.
func (s *Store) branchAfter(ctx context.Context, sagaID, step string, seq uint64) (Record, uint64, error) {
	l, err := s.records(ctx)
	if err != nil {
		return Record{}, 0, err
	}
	if err := l.ReadTo(ctx, seq); err != nil {
		return Record{}, 0, fmt.Errorf("records of %s: %w: %w", s.role, ErrUnavailable, err)
	}
	return s.branchOf(ctx, l, sagaID, step)
}

// checkRecord returns an error for a record, as the log holds it, that
// the coordinator would drop: over an eighth of the server's payload limit
// (see [messages.MaxOutputFor]), or not UTF-8. This store writes none; one
// written by another hand is no answer to give, nor to decide on.
func (s *Store) checkRecord(v []byte) error {
	if limit := s.maxPayload / 8; int64(len(v)) > limit {
		return fmt.Errorf("a record of %d bytes, over %d (an eighth of the server's payload limit): %w", len(v), limit, messages.ErrTooLarge)
	}
	return messages.CheckUTF8(v)
}

// branchOf looks up the record of step of saga in l, and in the state
// stream when the log holds none and agents before it left records there.
func (s *Store) branchOf(ctx context.Context, l *kvlog.Log, sagaID, step string) (Record, uint64, error) {
	var r Record
	v, rev, err := l.Value(ctx, messages.RecordKey(sagaID, step))
	if err != nil {
		return Record{}, 0, fmt.Errorf("branch %s/%s: %w: %w", sagaID, step, ErrUnavailable, err)
	}
	if v != nil {
		if err = s.checkRecord(v); err == nil {
			r, err = wirejson.DecodeRecord(v)
		}
		if err == nil {
			err = r.Check()
		}
		if err != nil {
			return Record{}, 0, fmt.Errorf("branch %s/%s: %w: %w", sagaID, step, errBadRecord, err)
		}
		return r, rev, nil
	}
	if !s.legacy {
		return r, 0, nil
	}
	m, err := s.last(ctx, messages.BranchSubject(s.role, sagaID, step))
	if err != nil || m == nil {
		return r, 0, err
	}
	err = json.Unmarshal(m.Data, &r)
	if err == nil {
		err = r.Check()
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("branch %s/%s: %w: %w", sagaID, step, errBadRecord, err)
	}
	// The log holds nothing for the branch: its first record there is
	// written expecting none.
	return r, 0, nil
}

// synced returns the role's record log, read to the end the server has.
func (s *Store) synced(ctx context.Context) (*kvlog.Log, error) {
	l, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.Sync(ctx); err != nil {
		return nil, fmt.Errorf("records of %s: %w: %w", s.role, ErrUnavailable, err)
	}
	return l, nil
}

// moved reports which of cmds' branches hold a record other than the one
// at the revision revs gives (0: none), read once the record log has been
// read up to seq (see [Store.branchAfter]).
func (s *Store) moved(ctx context.Context, cmds []*messages.Command, revs []uint64, seq uint64) ([]bool, error) {
	l, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	if err := l.ReadTo(ctx, seq); err != nil {
		return nil, fmt.Errorf("records of %s: %w: %w", s.role, ErrUnavailable, err)
	}
	found := make([]bool, len(cmds))
	var legacy []string
	at := map[string]int{}
	for i, cmd := range cmds {
		if l.Rev(messages.RecordKey(cmd.SagaID, cmd.Step)) != revs[i] {
			found[i] = true
		} else if s.legacy && revs[i] == 0 {
			subject := messages.BranchSubject(s.role, cmd.SagaID, cmd.Step)
			legacy = append(legacy, subject)
			at[subject] = i
		}
	}
	if len(legacy) == 0 {
		return found, nil
	}
	err = s.lastOfEach(ctx, legacy, func(m *jetstream.RawStreamMsg) error {
		found[at[m.Subject]] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %d branches: %w", len(legacy), err)
	}
	return found, nil
}

// lastOfEach calls each with the last message of each of subjects of the
// role's state stream that has one, read in one direct get (at most 1,024
// subjects). The server answers with the messages found, or that there are
// none; a request it never answers (one the user may not send) ends the
// same way with nothing at all, and is an error wrapping [ErrUnavailable].
func (s *Store) lastOfEach(ctx context.Context, subjects []string, each func(*jetstream.RawStreamMsg) error) error {
	msgs, err := jetstreamext.GetLastMsgsFor(ctx, s.js, messages.StateStream(s.role), subjects)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	answered := false
	for m, err := range msgs {
		if errors.Is(err, jetstreamext.ErrNoMessages) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		answered = true
		if err := each(m); err != nil {
			return err
		}
	}
	if !answered {
		return fmt.Errorf("%w: no answer from the server", ErrUnavailable)
	}
	return nil
}

// conflict reports whether err is a write that lost to another: a state
// value's, or a record's.
func conflict(err error) bool {
	return jserr.Conflict(err) || errors.Is(err, kvlog.ErrConflict)
}

// Get decodes role's state value key into v and returns its sequence, 0
// when absent (v is then untouched).
func (s *Store) Get(ctx context.Context, key string, v any) (uint64, error) {
	if err := messages.CheckKey(key); err != nil {
		return 0, err
	}
	env, seq, err := s.readEnvelope(ctx, messages.DataSubject(s.role, key))
	if err != nil || seq == 0 {
		return 0, err
	}
	if err := json.Unmarshal(env.Value, v); err != nil {
		return 0, fmt.Errorf("state %s: %w", key, err)
	}
	return seq, nil
}

// getAllBatch bounds the subjects of one direct get of many: the server
// answers at most 1,024 messages a request.
const getAllBatch = 1024

// GetAll decodes the value of each of role's state keys into value(i),
// leaving it untouched when the key has no value, and reports which have
// one. It reads up to 1,024 keys a request, one direct get of the last
// message of each of their subjects, where [Store.Get] is a request a key.
func (s *Store) GetAll(ctx context.Context, keys []string, value func(i int) any) ([]bool, error) {
	found := make([]bool, len(keys))
	for lo := 0; lo < len(keys); lo += getAllBatch {
		part := keys[lo:min(lo+getAllBatch, len(keys))]
		at := make(map[string][]int, len(part))
		subjects := make([]string, 0, len(part))
		for i, key := range part {
			if err := messages.CheckKey(key); err != nil {
				return nil, err
			}
			subj := messages.DataSubject(s.role, key)
			if _, ok := at[subj]; !ok {
				subjects = append(subjects, subj)
			}
			at[subj] = append(at[subj], lo+i)
		}
		err := s.lastOfEach(ctx, subjects, func(m *jetstream.RawStreamMsg) error {
			for _, i := range at[m.Subject] {
				if err := DecodeValue(m.Data, value(i)); err != nil {
					return fmt.Errorf("state %s: %w", keys[i], err)
				}
				found[i] = true
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read %d values: %w", len(subjects), err)
		}
	}
	return found, nil
}

// last returns the last message on subject, nil when there is none.
func (s *Store) last(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", subject, ErrUnavailable, err)
	}
	return m, nil
}

func (s *Store) readEnvelope(ctx context.Context, subject string) (envelope, uint64, error) {
	var env envelope
	m, err := s.last(ctx, subject)
	if err != nil || m == nil {
		return env, 0, err
	}
	env, err = wirejson.DecodeStateEnvelope(m.Data)
	if err != nil {
		return env, 0, fmt.Errorf("state %s: %w", subject, err)
	}
	return env, m.Sequence, nil
}

// DecodeValue decodes into v the state value stored in data, a message of
// a role's state stream on [messages.DataSubject]. It returns an error when
// data is not a stored state value.
func DecodeValue(data []byte, v any) error {
	env, err := wirejson.DecodeStateEnvelope(data)
	if err != nil {
		return fmt.Errorf("state value: %w", err)
	}
	if env.Value == nil {
		return errors.New("state value: no value")
	}
	return json.Unmarshal(env.Value, v)
}

// Init stores v under key unless key already has a value. It reports
// whether it stored it.
func (s *Store) Init(ctx context.Context, key string, v any) (bool, error) {
	if err := messages.CheckKey(key); err != nil {
		return false, err
	}
	value, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("init %s: %w", key, err)
	}
	data, err := wirejson.AppendStateEnvelope(nil, &envelope{Value: value})
	if err != nil {
		return false, fmt.Errorf("init %s: %w", key, err)
	}
	_, err = s.js.Publish(ctx, messages.DataSubject(s.role, key), data, jetstream.WithExpectLastSequencePerSubject(0))
	if jserr.Conflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("init %s: %w", key, err)
	}
	return true, nil
}

// A store seeds a role's state, and a txn is what its handlers see.
var (
	_ agent.Seeder = (*Store)(nil)
	_ agent.Tx     = (*txn)(nil)
)

// txn is the [agent.Tx] of one command. Reads remember the sequence they
// saw; writes are committed with the branch's record, and only if nothing
// read has changed since.
type txn struct {
	ctx   context.Context
	store *Store
	op    string // this branch action, as named in envelopes
	reads map[string]cached
	// writes in the order of their first Put.
	writes []write
	locked []string
	// applied holds the output recorded in an envelope by an earlier run
	// of this very action: its write happened, so this run's is dropped.
	applied messages.Context
	found   string // the value whose envelope named this action
	// overlay, in a batch (runBatch), holds the values as the commands
	// before this one left them, to read before the cache.
	overlay map[string]cached
	// fresh reads every value from the server, past the cache: a run that
	// looks for a write of its action another copy may have made.
	fresh bool
	// fromCache lists the subjects whose value came from the store's
	// cache, to check before the action's result counts.
	fromCache []string
}

type write struct {
	subject string
	value   json.RawMessage
}

// Get implements [agent.Tx]. Within this process, key is then held by the
// transaction until the command is answered: a handler that reads several
// keys must read them in one fixed order.
func (tx *txn) Get(key string, v any) (bool, error) {
	if err := messages.CheckKey(key); err != nil {
		return false, err
	}
	subj := messages.DataSubject(tx.store.role, key)
	for _, w := range tx.writes {
		if w.subject == subj {
			return true, json.Unmarshal(w.value, v)
		}
	}
	c, err := tx.read(subj)
	if err != nil {
		return false, err
	}
	if c.seq == 0 {
		return false, nil
	}
	if err := json.Unmarshal(c.env.Value, v); err != nil {
		return false, fmt.Errorf("state %s: %w", key, err)
	}
	return true, nil
}

// read returns the value stored on subj as the transaction sees it: the
// first read holds subj for the transaction and notes whether the
// envelope names tx's action.
func (tx *txn) read(subj string) (cached, error) {
	if c, ok := tx.reads[subj]; ok {
		return c, nil
	}
	tx.store.lock(subj)
	tx.locked = append(tx.locked, subj)
	c, ok := tx.overlay[subj]
	if !ok && !tx.fresh {
		if c, ok = tx.store.cached(subj); ok {
			tx.fromCache = append(tx.fromCache, subj)
		}
	}
	if !ok {
		var err error
		if c.env, c.seq, err = tx.store.readEnvelope(tx.ctx, subj); err != nil {
			return c, err
		}
		tx.store.remember(subj, c)
	}
	tx.reads[subj] = c
	if out, ok := c.env.Ops[tx.op]; ok {
		tx.applied, tx.found = out, subj
	}
	return c, nil
}

// Put implements [agent.Tx].
func (tx *txn) Put(key string, v any) error {
	if err := messages.CheckKey(key); err != nil {
		return err
	}
	subj := messages.DataSubject(tx.store.role, key)
	if _, ok := tx.reads[subj]; !ok {
		return fmt.Errorf("put %s: read it with Get first", key)
	}
	value, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := agent.CheckValue(key, value, tx.store.maxPayload); err != nil {
		return err
	}
	for i := range tx.writes {
		if tx.writes[i].subject == subj {
			tx.writes[i].value = value
			return nil
		}
	}
	tx.writes = append(tx.writes, write{subject: subj, value: value})
	return nil
}

// release lets other transactions of this process at the keys tx held.
func (tx *txn) release() {
	for _, subj := range tx.locked {
		tx.store.unlock(subj)
	}
	tx.locked = nil
}

func (s *Store) lock(subj string) {
	s.mu.Lock()
	l, ok := s.keys[subj]
	if !ok {
		l = &keyLock{}
		s.keys[subj] = l
	}
	l.refs++
	s.mu.Unlock()
	l.Lock()
}

func (s *Store) unlock(subj string) {
	s.mu.Lock()
	l := s.keys[subj]
	l.refs--
	if l.refs == 0 {
		delete(s.keys, subj)
	}
	s.mu.Unlock()
	l.Unlock()
}

func (s *Store) cached(subj string) (cached, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cache.get(subj)
}

// remember caches a state value's envelope, as read from the server or
// written. The cache holds the maxCached keys remembered last: state keys
// come from client data (one per household), and are as many as the
// clients make. A key only read from the cache, never written nor read
// again from the server, is let go in its turn, and read again then.
func (s *Store) remember(subj string, c cached) {
	s.mu.Lock()
	s.cache.put(subj, c)
	s.mu.Unlock()
}

// forgetAll empties the cache. A serial role's copy calls it when another
// copy may have written since: an action that only reads (an evaluation
// against the budget) has no compare-and-swap write to catch a stale
// value.
func (s *Store) forgetAll() {
	s.mu.Lock()
	s.cache.clear()
	s.mu.Unlock()
}

func (s *Store) forget(reads map[string]cached) {
	s.mu.Lock()
	for subj := range reads {
		s.cache.delete(subj)
	}
	s.mu.Unlock()
}

// settle notes that op's result is recorded, so the next write of subj
// drops op from its envelope. The list of a key settled longest ago is let
// go beyond maxCached keys: a key written over and over (a budget) has its
// list taken at each write, and settled afresh, so the lists let go are
// those of keys settled longest ago and not written since.
func (s *Store) settle(subj, op string) {
	s.mu.Lock()
	ops, _ := s.settled.get(subj)
	s.settled.put(subj, append(ops, op))
	s.mu.Unlock()
}

// settledOps returns what subj's next write drops from its envelope: the
// actions settled on it.
func (s *Store) settledOps(subj string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ops, _ := s.settled.get(subj)
	return ops
}

// unsettle takes dropped, the actions a write of subj has just dropped
// from its envelope (as [Store.settledOps] gave them), off subj's list,
// keeping those settled since.
//
// A list let go (settle), or lost with the process, leaves its names in
// the value's envelope: names of actions whose result is recorded, with
// the write each names accounted for (an execute or a compensation
// recorded as having written, [branch.recordWritten], [Store.runBatch];
// an undo whose execute the value it undid no longer names,
// [branch.undo]). Every such name is in the envelope from its record
// until the value's next write anyway, and a copy whose log lags may run
// the action meanwhile, so the barrier already takes it: a command of a
// branch with its result is answered from the record ([agent.Decide]); a
// run that finds its name records it as done, and its record's write
// meets the one there ([branch.recordWritten]); an execute recorded OK is
// never looked for ([branch.refuse], [branch.answer]); an undo found
// again finds its execute gone, and does nothing. Another copy, which
// does not know this one's lists, keeps such names too. What a name left
// costs is its bytes in the envelope, until a copy that settled it writes
// the value.
func (s *Store) unsettle(subj string, dropped []string) {
	if len(dropped) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ops, ok := s.settled.get(subj)
	if !ok {
		return
	}
	var rest []string
	if len(ops) >= len(dropped) && slices.Equal(ops[:len(dropped)], dropped) {
		// The list read, and what was settled on subj since, after it.
		rest = ops[len(dropped):]
	} else {
		// The list read was let go, and subj settled again since.
		for _, op := range ops {
			if !slices.Contains(dropped, op) {
				rest = append(rest, op)
			}
		}
	}
	if len(rest) == 0 {
		s.settled.delete(subj)
		return
	}
	s.settled.put(subj, rest)
}

// Do runs cmd's action through the barrier with h, and returns the reply to
// send and how the command was disposed of. It returns an error wrapping
// [ErrUnavailable] or [ErrConflict] when the store cannot be read or
// written, or another command is writing the branch; the command should
// then be delivered again later.
func (s *Store) Do(ctx context.Context, cmd *messages.Command, h agent.Handler) (messages.Reply, agent.Verdict, error) {
	reply, verdict, err := s.do(ctx, cmd, h)
	if errors.Is(err, errBadRecord) {
		reason := err.Error()
		if len(reason) > maxBadRecordReason {
			reason = strings.ToValidUTF8(reason[:maxBadRecordReason], "") + "…"
		}
		return messages.ReplyTo(cmd, messages.Error, reason), agent.Transient, nil
	}
	return reply, verdict, err
}

func (s *Store) do(ctx context.Context, cmd *messages.Command, h agent.Handler) (messages.Reply, agent.Verdict, error) {
	b := &branch{s: s, cmd: cmd, h: h, key: messages.RecordKey(cmd.SagaID, cmd.Step),
		op: opName(cmd, string(cmd.Action))}
	// An execute is usually the branch's first record, so the first try
	// assumes there is none and skips the read; a conflict corrects it.
	known := cmd.Action == messages.Execute
	for attempt := range s.maxConflicts {
		if !known {
			var err error
			if b.rec, b.seq, err = s.branchAfter(ctx, cmd.SagaID, cmd.Step, 0); err != nil {
				return messages.Reply{}, agent.Transient, err
			}
		}
		b.unread, known = known, false
		reply, verdict, err := b.run(ctx)
		if errors.Is(err, errBranchUnread) {
			b.rec, b.seq = Record{}, 0
			continue
		}
		if errors.Is(err, errStaleRead) {
			// The values read are cached afresh: run again.
			s.conflicts.Add(1)
			b.rec, b.seq = Record{}, 0
			continue
		}
		if conflict(err) || errors.Is(err, errRecordMoved) {
			// Another writer was here: whatever it wrote besides the
			// record is read again too.
			s.conflicts.Add(1)
			s.forgetAll()
			b.rec, b.seq = Record{}, 0
			backoff(attempt)
			continue
		}
		return reply, verdict, err
	}
	return messages.Reply{}, agent.Transient, fmt.Errorf("%s %s %s: %w", cmd.SagaID, cmd.Step, cmd.Action, ErrConflict)
}

// opName names, in a value's envelope, what cmd's branch did to the
// value: its action ("execute", "compensate"), or "undo".
func opName(cmd *messages.Command, what string) string {
	return cmd.SagaID + "/" + cmd.Step + "/" + what
}

// branch is one command's passage through the barrier.
type branch struct {
	s   *Store
	cmd *messages.Command
	h   agent.Handler
	key string // the branch's record key
	op  string
	rec Record
	seq uint64
	// unread is set while the branch runs on the guess, not read, that
	// it has no record yet ([Store.do]).
	unread bool
}

// run applies the barrier rules ([agent.Decide]) to the record read, runs
// the handler when they say so, and commits what [agent.Conclude] makes of
// its return. A conflict error means the record or a value changed under
// it: read again and rerun.
func (b *branch) run(ctx context.Context) (messages.Reply, agent.Verdict, error) {
	cmd, rec := b.cmd, &b.rec
	mine := &rec.Execute // the action's own result in the record
	if cmd.Action == messages.Compensate {
		mine = &rec.Compensate
	}
	switch agent.Decide(*rec, cmd.Action) {
	case agent.Answer:
		return b.answer(ctx, *mine)
	case agent.Refuse:
		return b.refuse(ctx)
	case agent.Wait:
		return b.wait()
	case agent.NothingToUndo:
		*mine = agent.NoopResult(cmd, time.Now().UTC())
		return (*mine).Reply(cmd), agent.Noop, b.record(ctx)
	}

	tx := &txn{ctx: ctx, store: b.s, op: b.op, reads: map[string]cached{}}
	defer tx.release()
	// A claim is a pending result, written before its value by agents
	// before this one; an earlier run of the action got that far.
	claimed := *mine != nil
	out, err := b.h.Run(ctx, tx, cmd)
	if tx.found != "" {
		// An earlier run of this action wrote its value and stopped before
		// recording its result: record it now, apply nothing.
		*mine = &Result{Outcome: messages.OK, Output: tx.applied, Seq: cmd.Seq, At: time.Now().UTC()}
		tx.release() // an undo takes the value again
		return b.recordWritten(ctx, tx.found)
	}
	if errors.Is(err, ErrUnavailable) {
		return messages.Reply{}, agent.Transient, err
	}
	c := agent.Conclude(cmd, out, err, claimed, time.Now().UTC(), messages.MaxOutputFor(b.s.maxPayload))
	switch {
	case c.Redeliver:
		return messages.Reply{}, agent.Transient, fmt.Errorf("execute %s: %w: %w", b.op, ErrUnavailable, err)
	case c.Result == nil:
		if err := b.checkUnread(ctx); err != nil {
			return messages.Reply{}, agent.Transient, err
		}
		// An error: the values read may be what caused it (one an
		// operator has since repaired, say). They are read from the
		// server next time, also by a copy that is the role's only writer.
		b.s.forget(tx.reads)
		return c.Reply, agent.Transient, nil
	}
	if !c.Keep {
		tx.writes = nil
	}
	switch len(tx.writes) {
	case 0:
		if err := b.s.checkReads(ctx, tx, ""); err != nil {
			return messages.Reply{}, agent.Transient, err
		}
		*mine = c.Result
		return c.Result.Reply(cmd), agent.Applied, b.record(ctx)
	case 1:
		// The value written is checked by its compare-and-swap write.
		if err := b.s.checkReads(ctx, tx, tx.writes[0].subject); err != nil {
			return messages.Reply{}, agent.Transient, err
		}
	default:
		// Nothing is recorded: the command fails like a transient error.
		err := fmt.Errorf("%s writes %d values: %w", b.op, len(tx.writes), ErrTooManyWrites)
		return messages.ReplyTo(cmd, messages.Error, err.Error()), agent.Transient, nil
	}

	// The action writes one value. Its branch is read again now that the
	// value is read, and before it is written: a run of the same action
	// that recorded its result, and whose name a later write then dropped
	// from the value's envelope, is found here; and a compensation
	// recorded since stops an execute before it writes.
	if b.rec, b.seq, err = b.s.branchAfter(ctx, cmd.SagaID, cmd.Step, tx.reads[tx.writes[0].subject].env.Records); err != nil {
		return messages.Reply{}, agent.Transient, err
	}
	switch agent.Decide(*rec, cmd.Action) {
	case agent.Answer:
		tx.release() // the answer may look for a write of this action
		return b.answer(ctx, *mine)
	case agent.Refuse:
		tx.release() // the refusal looks for a write of this action
		return b.refuse(ctx)
	case agent.Wait:
		return b.wait()
	case agent.Run:
	default:
		// A compensation whose execute changed its record meanwhile.
		return messages.Reply{}, agent.Transient, fmt.Errorf("record %s: %w", b.key, errRecordMoved)
	}
	*mine = c.Result
	if err := b.s.writeValue(ctx, tx, b.op, c.Result.Output); err != nil {
		return messages.Reply{}, agent.Transient, err
	}
	tx.release() // an undo takes the value again
	return b.recordWritten(ctx, tx.writes[0].subject)
}

// errBranchUnread is returned by a run on the guess that the branch had
// no record, whose handler failed, when the branch turns out to have one:
// the command runs again on it.
var errBranchUnread = errors.New("the branch has a record the run did not read")

// checkUnread reads the branch of an execute run on the guess that it has
// no record yet ([Store.do]), before its handler's failure is answered:
// with a record there (errBranchUnread), a duplicate is answered from it,
// whatever the handler does now, and an execute that comes after its
// compensation goes to its refusal ([branch.refuse]). A rejection needs
// no look: its record's write finds the record there.
func (b *branch) checkUnread(ctx context.Context) error {
	if !b.unread {
		return nil
	}
	rec, _, err := b.s.branchAfter(ctx, b.cmd.SagaID, b.cmd.Step, 0)
	if err != nil {
		return err
	}
	if rec.Execute != nil || rec.Compensate != nil {
		return errBranchUnread
	}
	return nil
}

// wait has a compensation whose execute is still being written (its claim
// is pending) delivered again later.
func (b *branch) wait() (messages.Reply, agent.Verdict, error) {
	return messages.Reply{}, agent.Transient, fmt.Errorf("compensate %s: its execute is still being written: %w", b.op, ErrUnavailable)
}

// errRecordMoved is the conflict of a branch record that changed between
// two reads of one run: the command is run again.
var errRecordMoved = errors.New("the branch record changed while the action ran")

// errBadRecord marks a branch record that does not decode, or says what
// no record may: no run of the command can decide on it. [Store.Do]
// answers the command with an error, so that the saga's retries, then its
// rollback or its failure, follow, and never asks for it again for ever.
var errBadRecord = errors.New("its barrier record is malformed (repair or remove it, then retry the saga)")

// maxBadRecordReason bounds the reason of errBadRecord's answer, which
// the saga's history keeps.
const maxBadRecordReason = 400

// errStaleRead is the conflict of a value this process had cached and
// another process wrote since: the command is run again on the value as
// stored.
var errStaleRead = errors.New("a value read was written by another copy")

// checkReads checks the values tx read from the cache, but for written
// (checked by its own write), against the server, unless this process is
// the role's only writer. A handler may decide on a value alone, without
// writing it: a rejection, or a compensation that finds nothing of its
// execute to undo. Another copy may have written the value since this
// process cached it; such a decision, on what the value was, would be
// recorded as if it were on what the value is, and an execute's write
// could stay after its compensation was recorded. A value found changed
// is cached as stored, and the command runs again on it (errStaleRead).
func (s *Store) checkReads(ctx context.Context, tx *txn, written string) error {
	if s.exclusive {
		return nil
	}
	stale := false
	for _, subj := range tx.fromCache {
		if subj == written {
			continue
		}
		env, seq, err := s.readEnvelope(ctx, subj)
		if err != nil {
			return err
		}
		if seq != tx.reads[subj].seq {
			s.remember(subj, cached{env: env, seq: seq})
			stale = true
		}
	}
	if stale {
		return errStaleRead
	}
	return nil
}

// recordWritten records the action's result, its value write (to subject)
// stored: an action that writes commits in two writes, the value naming
// the action in its envelope, then the record. Until the record is
// stored, the envelope is what says the write happened.
//
// The record is guarded by the sequence the branch was read at. When
// another writer was there first, the branch is read again:
//
//   - a run of the same action that recorded its result: this run is the
//     duplicate. That run found the write in the envelope, and recorded OK
//     with its output; or, for an execute, it reached its result without
//     the write ([agent.WriteFound]): a rejection, or a result from a value
//     read before the write landed, recorded while this copy's log had not
//     yet read it. Then the execute undoes its own write ([branch.undo]):
//     the record says what happened, and no effect stays that it does not
//     name. An execute whose branch was compensated since is refused;
//   - the compensation of an execute, recorded as having nothing to undo
//     while the execute was writing. Then the execute undoes its own write
//     and is refused, as if it had come after the compensation.
//
// Anything else is a conflict: the command runs again.
func (b *branch) recordWritten(ctx context.Context, subject string) (messages.Reply, agent.Verdict, error) {
	cmd := b.cmd
	err := b.record(ctx)
	if err == nil {
		b.s.settle(subject, b.op)
		return b.rec.Result(cmd.Action).Reply(cmd), agent.Applied, nil
	}
	if !conflict(err) {
		return messages.Reply{}, agent.Transient, err
	}
	// Read to the server's end: the conflict may be with the copy's own
	// log, which need not yet hold a compensation recorded since.
	rec, _, rerr := b.s.Branch(ctx, cmd.SagaID, cmd.Step)
	if rerr != nil {
		return messages.Reply{}, agent.Transient, rerr
	}
	if res := rec.Result(cmd.Action); res.Done() {
		if cmd.Action == messages.Execute && !agent.WriteFound(res, b.rec.Execute.Output) {
			if err := b.undo(ctx, subject); err != nil {
				return messages.Reply{}, agent.Transient, err
			}
		} else {
			b.s.settle(subject, b.op)
		}
		if cmd.Action == messages.Execute && rec.Compensate != nil {
			// Compensated since: refused, as [agent.Decide] has it.
			return agent.Refusal(cmd), agent.Refused, nil
		}
		return res.Reply(cmd), agent.Duplicate, nil
	}
	if cmd.Action == messages.Execute && rec.Compensate != nil {
		if err := b.undo(ctx, subject); err != nil {
			return messages.Reply{}, agent.Transient, err
		}
		return agent.Refusal(cmd), agent.Refused, nil
	}
	return messages.Reply{}, agent.Transient, err
}

// refuse answers an execute that came after its compensation. A run of it
// may have written its value and not its record before the compensation
// was recorded (see [branch.recordWritten]), and stopped there: that
// write is undone. An execute recorded OK has no such write: its
// compensation took back what it wrote, and a value whose envelope still
// names it (written by a copy that had not learnt the execute was
// recorded, so kept the name) must not be given back twice.
func (b *branch) refuse(ctx context.Context) (messages.Reply, agent.Verdict, error) {
	if r := b.rec.Execute; !r.Done() || r.Outcome != messages.OK {
		if err := b.undoStray(ctx); err != nil {
			return messages.Reply{}, agent.Transient, err
		}
	}
	return agent.Refusal(b.cmd), agent.Refused, nil
}

// answer answers a command whose result res is recorded. An execute is
// answered so only while its branch is not compensated: the record log as
// this copy has read it may lag the server's, where the compensation may
// be recorded since, so the branch is read to the server's end first, and
// a compensated one refused. For an execute recorded as not done, a run
// of it in another copy may have written its value while this result was
// recorded without it, and stopped before it undid the write (see
// [branch.recordWritten]): that write is undone first. An execute
// recorded OK, and a compensation, are answered as they are.
func (b *branch) answer(ctx context.Context, res *Result) (messages.Reply, agent.Verdict, error) {
	if b.cmd.Action == messages.Execute {
		rec, _, err := b.s.Branch(ctx, b.cmd.SagaID, b.cmd.Step)
		if err != nil {
			return messages.Reply{}, agent.Transient, err
		}
		if rec.Compensate != nil {
			b.rec = rec
			return b.refuse(ctx)
		}
		if res.Outcome != messages.OK {
			if err := b.undoStray(ctx); err != nil {
				return messages.Reply{}, agent.Transient, err
			}
		}
	}
	return res.Reply(b.cmd), agent.Duplicate, nil
}

// undoStray looks for a write of b's execute that no record accounts for,
// by running the handler against the values as the server has them (a
// value this copy holds may be older than the write), and undoes the
// write it finds. A handler that fails, but for a rejection, may not have
// read the value: the look is tried again with the command's next
// delivery ([ErrUnavailable]).
func (b *branch) undoStray(ctx context.Context) error {
	tx := &txn{ctx: ctx, store: b.s, op: b.op, reads: map[string]cached{}, fresh: true}
	_, err := b.h.Run(ctx, tx, b.cmd)
	tx.release()
	if tx.found != "" {
		return b.undo(ctx, tx.found)
	}
	if _, rejected := agent.IsReject(err); err != nil && !rejected {
		// It may have stopped before reading the value it writes: the
		// command is delivered again, to look again.
		return fmt.Errorf("look for a write of %s: %w: %w", b.op, ErrUnavailable, err)
	}
	return nil
}

// undo takes back the write of b's execute to subject, whose envelope
// names the execute, with the step's compensation handler. When the
// handler writes subject, or nothing, it is one write guarded by the
// value's sequence: the value becomes what the handler makes of it, and
// the envelope forgets the execute. When the handler writes another value,
// that value is written first, naming the undo in its envelope, then
// subject forgets the execute; a run after a crash in between finds the
// undo's write and does not apply it again. A value that no longer names
// the execute was undone already.
func (b *branch) undo(ctx context.Context, subject string) error {
	comp := *b.cmd
	comp.Action = messages.Compensate
	undoOp := opName(b.cmd, "undo")
	tx := &txn{ctx: ctx, store: b.s, op: undoOp, reads: map[string]cached{}}
	defer tx.release()
	if _, err := b.h.Run(ctx, tx, &comp); err != nil && tx.found == "" {
		return fmt.Errorf("undo %s: %w: %w", b.op, ErrUnavailable, err)
	}
	if len(tx.writes) > 1 {
		return fmt.Errorf("undo %s: %w", b.op, ErrTooManyWrites)
	}
	read, err := tx.read(subject)
	if err != nil {
		return err
	}
	value, other := json.RawMessage(nil), tx.found
	if len(tx.writes) == 1 && tx.found == "" {
		if w := tx.writes[0]; w.subject == subject {
			value = w.value
		} else {
			// The execute's value is read afresh before the other is
			// written: a run that undid the execute since, and whose
			// name a later write then dropped from the other value, is
			// seen here.
			if read.env, read.seq, err = b.s.readEnvelope(ctx, subject); err != nil {
				return err
			}
			if _, ok := read.env.Ops[b.op]; !ok {
				return nil
			}
			if err := b.s.writeValue(ctx, tx, undoOp, messages.Context{}); err != nil {
				return err
			}
			other = w.subject
		}
	}
	if _, ok := read.env.Ops[b.op]; !ok {
		return nil
	}
	if value == nil {
		value = read.env.Value
	}
	env := envelope{Value: value, Ops: map[string]messages.Context{}}
	b.s.stamp(ctx, &env, read.env)
	for op, o := range read.env.Ops {
		if op != b.op {
			env.Ops[op] = o
		}
	}
	data, err := wirejson.AppendStateEnvelope(nil, &env)
	if err != nil {
		return fmt.Errorf("encode %s: %w", subject, err)
	}
	ack, err := b.s.js.Publish(ctx, subject, data, jetstream.WithExpectLastSequencePerSubject(read.seq))
	if err != nil {
		b.s.forget(map[string]cached{subject: read})
		return wrapWrite(subject, err)
	}
	b.s.remember(subject, cached{env: env, seq: ack.Sequence})
	if other != "" {
		b.s.settle(other, undoOp)
	}
	return nil
}

// record writes the branch record, guarded by the revision it was read
// at, and keeps the new revision.
func (b *branch) record(ctx context.Context) error {
	data, err := wirejson.AppendRecord(make([]byte, 0, 192), &b.rec)
	if err != nil {
		return err
	}
	l, err := b.s.records(ctx)
	if err != nil {
		return err
	}
	rev, err := l.Put(ctx, kvlog.Entry{Key: b.key, Value: data, Rev: b.seq})
	if err != nil {
		return wrapWrite("record "+b.key, err)
	}
	b.seq = rev
	return nil
}

// writeValue writes tx's one value in an envelope that names op, the
// action writing it, with its output out, and drops the actions this
// process knows are settled.
func (s *Store) writeValue(ctx context.Context, tx *txn, op string, out messages.Context) error {
	w := tx.writes[0]
	read := tx.reads[w.subject]
	env := envelope{Value: w.value, Ops: map[string]messages.Context{}}
	s.stamp(ctx, &env, read.env)
	settled := s.settledOps(w.subject)
	for op, o := range read.env.Ops {
		env.Ops[op] = o
	}
	for _, op := range settled {
		delete(env.Ops, op)
	}
	if out == nil {
		out = messages.Context{}
	}
	env.Ops[op] = out
	data, err := wirejson.AppendStateEnvelope(nil, &env)
	if err != nil {
		return fmt.Errorf("encode %s: %w", w.subject, err)
	}
	ack, err := s.js.Publish(ctx, w.subject, data, jetstream.WithExpectLastSequencePerSubject(read.seq))
	if err != nil {
		s.forget(tx.reads)
		return wrapWrite(w.subject, err)
	}
	s.remember(w.subject, cached{env: env, seq: ack.Sequence})
	s.unsettle(w.subject, settled)
	return nil
}

// wrapWrite keeps a conflict recognisable and marks any other write
// failure as the store being unavailable.
func wrapWrite(subject string, err error) error {
	if conflict(err) {
		return fmt.Errorf("write %s: %w", subject, err)
	}
	return fmt.Errorf("write %s: %w: %w", subject, ErrUnavailable, err)
}

// backoff spaces out the optimistic retries of a hot key.
func backoff(attempt int) {
	if attempt == 0 {
		return
	}
	d := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(250*time.Microsecond)))
	time.Sleep(d)
}
