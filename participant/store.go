package participant

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/natsaga/natsaga/messages"
)

// ErrNoJetStream is returned when the NATS server has no JetStream: an
// agent refuses to run without a durable store.
var ErrNoJetStream = errors.New("natsaga agents need JetStream: start nats-server with -js (or jetstream {} in its config)")

// ErrUnavailable marks a failure to read or write the store itself (the
// server is unreachable or slow). Do returns such errors instead of a
// reply: the command is then delivered again, and the saga's retry budget
// is left alone.
var ErrUnavailable = errors.New("store unavailable")

// ErrConflict is returned by [Store.Do] when the optimistic retries of one
// command were exhausted by concurrent writers. It is transient.
var ErrConflict = errors.New("too many concurrent updates")

// rejectError is a business rejection.
type rejectError struct{ reason string }

func (e *rejectError) Error() string { return e.reason }

// Reject returns the error a handler returns for a business rejection, such
// as an exhausted budget: the saga rolls back and the command is not
// retried. Any other error a handler returns is transient and retried.
func Reject(format string, args ...any) error {
	return &rejectError{reason: fmt.Sprintf(format, args...)}
}

// IsReject reports whether err is, or wraps, a business rejection, and
// returns its reason.
func IsReject(err error) (string, bool) {
	var r *rejectError
	if errors.As(err, &r) {
		return r.reason, true
	}
	return "", false
}

// Record is a branch's barrier record: what happened to one step of one
// saga at this role. It is stored as JSON on [messages.BranchSubject].
type Record struct {
	Execute    *Result `json:"execute,omitempty"`
	Compensate *Result `json:"compensate,omitempty"`
}

// Result is the recorded result of one action of a branch.
type Result struct {
	Outcome messages.Outcome `json:"outcome"`
	Reason  string           `json:"reason,omitempty"`
	Output  messages.Context `json:"output,omitempty"`
	// Seq is the saga sequence number of the command that took effect.
	Seq int `json:"seq"`
	// Noop is set on a compensation that found nothing to undo.
	Noop bool      `json:"noop,omitempty"`
	At   time.Time `json:"at"`
}

// Verdict says how [Store.Do] disposed of a command.
type Verdict int

// The verdicts.
const (
	// Applied: the action took effect now (or was a business rejection,
	// recorded now).
	Applied Verdict = iota
	// Duplicate: the action had already been recorded; the stored result
	// was returned and nothing was applied.
	Duplicate
	// Refused: an execute that arrived after its compensation.
	Refused
	// Noop: a compensation whose execute never took effect.
	Noop
	// Transient: the handler failed transiently; nothing was recorded.
	Transient
)

// Handler runs one step's action. Execute returns the step's output, merged
// into the saga context; Compensate undoes the step. Both must have no
// effect except through tx, may run more than once for one command, and
// return [Reject] for a business rejection.
type Handler struct {
	Execute    func(ctx context.Context, tx *Tx, cmd *messages.Command) (messages.Context, error)
	Compensate func(ctx context.Context, tx *Tx, cmd *messages.Command) error
}

// Store is one role's durable state and branch barrier, kept in the stream
// [messages.StateStream] of that role. It is safe for concurrent use, also
// by several processes.
type Store struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	role   string
	subj   string // stream name, for the batch acks
	// maxConflicts bounds the optimistic retries of one command.
	maxConflicts int
	conflicts    atomic.Int64

	// Within one process, transactions on the same state key take turns
	// (keys), and the last value this process wrote or read is reused
	// (cache), so a hot key such as a budget costs one round trip per
	// command instead of a read and a lost race.
	mu    sync.Mutex
	keys  map[string]*keyLock
	cache map[string]cached
}

type keyLock struct {
	sync.Mutex
	refs int
}

type cached struct {
	data []byte
	seq  uint64
}

// StreamConfig is the configuration of role's state stream, with replicas
// copies.
func StreamConfig(role string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               messages.StateStream(role),
		Subjects:           messages.StateSubjects(role),
		Storage:            jetstream.FileStorage,
		Replicas:           max(replicas, 1),
		MaxMsgsPerSubject:  1,
		AllowDirect:        true,
		AllowAtomicPublish: true,
		Discard:            jetstream.DiscardOld,
	}
}

// OpenStore returns role's store, creating its stream when create is set
// (replicas copies) or waiting for it otherwise. It returns an error when
// the stream cannot be created or found before ctx ends.
func OpenStore(ctx context.Context, nc *nats.Conn, role string, create bool, replicas int) (*Store, error) {
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
	var st jetstream.Stream
	if create {
		st, err = js.CreateOrUpdateStream(ctx, StreamConfig(role, replicas))
	} else {
		st, err = waitStream(ctx, js, messages.StateStream(role))
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", role, err)
	}
	return &Store{nc: nc, js: js, stream: st, role: role, subj: messages.StateStream(role), maxConflicts: 200,
		keys: map[string]*keyLock{}, cache: map[string]cached{}}, nil
}

func waitStream(ctx context.Context, js jetstream.JetStream, name string) (jetstream.Stream, error) {
	for {
		st, err := js.Stream(ctx, name)
		if err == nil || !errors.Is(err, jetstream.ErrStreamNotFound) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stream %s: %w", name, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Role is the role whose state this store holds.
func (s *Store) Role() string { return s.role }

// Conflicts counts the optimistic retries this store has made.
func (s *Store) Conflicts() int64 { return s.conflicts.Load() }

// Branch returns the barrier record of step of saga, with its stream
// sequence (0 when absent).
func (s *Store) Branch(ctx context.Context, sagaID, step string) (Record, uint64, error) {
	var r Record
	seq, err := s.read(ctx, messages.BranchSubject(s.role, sagaID, step), &r)
	return r, seq, err
}

// Get decodes role's state value key into v and returns its sequence, 0
// when absent (v is then untouched).
func (s *Store) Get(ctx context.Context, key string, v any) (uint64, error) {
	return s.read(ctx, messages.DataSubject(s.role, key), v)
}

func (s *Store) read(ctx context.Context, subject string, v any) (uint64, error) {
	m, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w: %w", subject, ErrUnavailable, err)
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return 0, fmt.Errorf("read %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// Init stores v under key unless key already has a value. It reports
// whether it stored it.
func (s *Store) Init(ctx context.Context, key string, v any) (bool, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("init %s: %w", key, err)
	}
	_, err = s.js.Publish(ctx, messages.DataSubject(s.role, key), data, jetstream.WithExpectLastSequencePerSubject(0))
	if isConflict(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("init %s: %w", key, err)
	}
	return true, nil
}

// Tx is a handler's view of the role's state during one command. Reads
// remember the sequence they saw; writes are committed together with the
// branch record, and only if nothing read has changed since.
type Tx struct {
	ctx    context.Context
	store  *Store
	seqs   map[string]uint64
	writes []write
	locked []string
}

type write struct {
	subject string
	data    []byte
}

// Get decodes the state value key into v. It reports false, leaving v
// untouched, when key has no value yet. Within this process, key is then
// held by the transaction until the command is answered: a handler that
// reads several keys must read them in one fixed order.
func (tx *Tx) Get(key string, v any) (bool, error) {
	subj := messages.DataSubject(tx.store.role, key)
	if seq, ok := tx.seqs[subj]; ok {
		if w := tx.pending(subj); w != nil {
			return true, json.Unmarshal(w, v)
		}
		c, _ := tx.store.cached(subj)
		if seq == 0 {
			return false, nil
		}
		return true, json.Unmarshal(c.data, v)
	}
	tx.store.lock(subj)
	tx.locked = append(tx.locked, subj)
	if c, ok := tx.store.cached(subj); ok {
		if err := json.Unmarshal(c.data, v); err != nil {
			return false, fmt.Errorf("read %s: %w", subj, err)
		}
		tx.seqs[subj] = c.seq
		return true, nil
	}
	m, err := tx.store.stream.GetLastMsgForSubject(tx.ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		tx.seqs[subj] = 0
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w: %w", subj, ErrUnavailable, err)
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return false, fmt.Errorf("read %s: %w", subj, err)
	}
	tx.store.remember(subj, m.Data, m.Sequence)
	tx.seqs[subj] = m.Sequence
	return true, nil
}

func (tx *Tx) pending(subj string) []byte {
	for _, w := range tx.writes {
		if w.subject == subj {
			return w.data
		}
	}
	return nil
}

// release lets other transactions of this process at the keys tx held.
func (tx *Tx) release() {
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
	c, ok := s.cache[subj]
	return c, ok
}

// remember caches a state value. The cache holds one entry per key the
// process touched: state keys are few (a ledger, one per household).
func (s *Store) remember(subj string, data []byte, seq uint64) {
	s.mu.Lock()
	s.cache[subj] = cached{data: data, seq: seq}
	s.mu.Unlock()
}

func (s *Store) forget(subjs map[string]uint64) {
	s.mu.Lock()
	for subj := range subjs {
		delete(s.cache, subj)
	}
	s.mu.Unlock()
}

// Put sets the state value key to v when the command commits. key must have
// been read with Get in this transaction.
func (tx *Tx) Put(key string, v any) error {
	subj := messages.DataSubject(tx.store.role, key)
	if _, ok := tx.seqs[subj]; !ok {
		return fmt.Errorf("put %s: read it with Get first", key)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	for i := range tx.writes {
		if tx.writes[i].subject == subj {
			tx.writes[i].data = data
			return nil
		}
	}
	tx.writes = append(tx.writes, write{subject: subj, data: data})
	return nil
}

// Do runs cmd's action through the barrier with h, and returns the reply to
// send and how the command was disposed of. It returns an error only when
// the store cannot be read or written; the command should then be retried
// (redelivered) later.
func (s *Store) Do(ctx context.Context, cmd *messages.Command, h Handler) (messages.Reply, Verdict, error) {
	branch := messages.BranchSubject(s.role, cmd.SagaID, cmd.Step)
	// An execute is usually the branch's first record, so the first try
	// assumes there is none and skips the read; a conflict corrects it.
	var rec Record
	var recSeq uint64
	known := cmd.Action == messages.Execute
	for attempt := range s.maxConflicts {
		if !known {
			var err error
			if rec, recSeq, err = s.Branch(ctx, cmd.SagaID, cmd.Step); err != nil {
				return messages.Reply{}, Transient, err
			}
		}
		known = false
		reply, verdict, tx, done, err := s.decide(ctx, cmd, h, &rec)
		if done {
			if tx != nil {
				tx.release()
			}
			return reply, verdict, err
		}
		data, err := json.Marshal(rec)
		if err != nil {
			tx.release()
			return messages.Reply{}, Transient, fmt.Errorf("encode record: %w", err)
		}
		err = s.commit(ctx, tx, write{subject: branch, data: data}, recSeq)
		tx.release()
		if err != nil && !isConflict(err) {
			err = fmt.Errorf("commit %s: %w: %w", branch, ErrUnavailable, err)
		}
		if isConflict(err) {
			s.conflicts.Add(1)
			s.forget(tx.seqs)
			rec = Record{}
			backoff(attempt)
			continue
		}
		if err != nil {
			s.forget(tx.seqs)
			return messages.Reply{}, Transient, err
		}
		return reply, verdict, nil
	}
	return messages.Reply{}, Transient, fmt.Errorf("%s %s %s: %w", cmd.SagaID, cmd.Step, cmd.Action, ErrConflict)
}

// decide applies the barrier rules to rec and, when the handler must run,
// runs it. It updates rec to the record to store; done means there is
// nothing to store and reply is final. The caller releases the returned
// transaction, when there is one.
func (s *Store) decide(ctx context.Context, cmd *messages.Command, h Handler, rec *Record) (messages.Reply, Verdict, *Tx, bool, error) {
	now := time.Now().UTC()
	tx := &Tx{ctx: ctx, store: s, seqs: map[string]uint64{}}
	if cmd.Action == messages.Execute {
		switch {
		case rec.Compensate != nil:
			return messages.ReplyTo(cmd, messages.Failed, "refused: the step was compensated before it executed"), Refused, nil, true, nil
		case rec.Execute != nil:
			return fromResult(cmd, rec.Execute), Duplicate, nil, true, nil
		}
		out, err := h.Execute(ctx, tx, cmd)
		if reason, ok := IsReject(err); ok {
			tx.writes = nil
			rec.Execute = &Result{Outcome: messages.Failed, Reason: reason, Seq: cmd.Seq, At: now}
		} else if errors.Is(err, ErrUnavailable) {
			return messages.Reply{}, Transient, tx, true, err
		} else if err != nil {
			return messages.ReplyTo(cmd, messages.Error, err.Error()), Transient, tx, true, nil
		} else {
			rec.Execute = &Result{Outcome: messages.OK, Output: out, Seq: cmd.Seq, At: now}
		}
		return fromResult(cmd, rec.Execute), Applied, tx, false, nil
	}
	switch {
	case rec.Compensate != nil:
		return fromResult(cmd, rec.Compensate), Duplicate, nil, true, nil
	case rec.Execute == nil || rec.Execute.Outcome != messages.OK:
		rec.Compensate = &Result{Outcome: messages.OK, Noop: true, Seq: cmd.Seq, At: now, Reason: "nothing to undo"}
		return fromResult(cmd, rec.Compensate), Noop, tx, false, nil
	}
	if err := h.Compensate(ctx, tx, cmd); err != nil {
		if errors.Is(err, ErrUnavailable) {
			return messages.Reply{}, Transient, tx, true, err
		}
		if reason, ok := IsReject(err); ok {
			return messages.ReplyTo(cmd, messages.Failed, reason), Transient, tx, true, nil
		}
		return messages.ReplyTo(cmd, messages.Error, err.Error()), Transient, tx, true, nil
	}
	rec.Compensate = &Result{Outcome: messages.OK, Seq: cmd.Seq, At: now}
	return fromResult(cmd, rec.Compensate), Applied, tx, false, nil
}

func fromResult(cmd *messages.Command, r *Result) messages.Reply {
	reply := messages.ReplyTo(cmd, r.Outcome, r.Reason)
	reply.Output = r.Output
	return reply
}

// commit writes tx's writes and the branch record in one atomic batch, each
// guarded by the sequence it was read at.
func (s *Store) commit(ctx context.Context, tx *Tx, branch write, branchSeq uint64) error {
	if len(tx.writes) == 0 {
		_, err := s.js.Publish(ctx, branch.subject, branch.data, jetstream.WithExpectLastSequencePerSubject(branchSeq))
		return err
	}
	// An atomic batch is stored at consecutive sequences ending at the
	// commit's, so each write's new sequence is known from the ack.
	last, err := s.commitBatch(ctx, tx, branch, branchSeq)
	if err != nil {
		return err
	}
	first := last - uint64(len(tx.writes))
	for i, w := range tx.writes {
		s.remember(w.subject, w.data, first+uint64(i))
	}
	return nil
}

func (s *Store) commitBatch(ctx context.Context, tx *Tx, branch write, branchSeq uint64) (uint64, error) {
	id := nuid.Next()
	all := append(tx.writes, branch)
	for i, w := range all {
		m := nats.NewMsg(w.subject)
		m.Data = w.data
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		seq := branchSeq
		if i < len(tx.writes) {
			seq = tx.seqs[w.subject]
		}
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(seq, 10))
		if i < len(all)-1 {
			if err := s.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("batch publish: %w", err)
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		resp, err := s.nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return 0, fmt.Errorf("batch commit: %w", err)
		}
		var ack struct {
			Seq   uint64              `json:"seq"`
			Count int                 `json:"count"`
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return 0, fmt.Errorf("batch commit ack: %w", err)
		}
		if ack.Error != nil {
			return 0, fmt.Errorf("batch commit: %w", ack.Error)
		}
		if ack.Count != len(all) {
			return 0, fmt.Errorf("batch commit stored %d of %d messages", ack.Count, len(all))
		}
		return ack.Seq, nil
	}
	return 0, errors.New("empty batch")
}

// backoff spaces out the optimistic retries of a hot key.
func backoff(attempt int) {
	if attempt == 0 {
		return
	}
	d := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(250*time.Microsecond)))
	time.Sleep(d)
}

// isConflict reports whether err is JetStream's "wrong last sequence".
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
