// Package kvlog keeps many keys' values in one JetStream stream, many
// values a message, with a compare-and-swap per key.
//
// A key-value bucket stores a message per write, each on its subject,
// and the server checks each compare-and-swap on its own. A log stores a
// message per group of writes: every process that opens the log reads it
// to its end and follows it, keeping each key's last value and its
// revision (the sequence of the message that wrote it). A write names the
// revision it expects; the [Log] checks it against what it holds, and
// publishes the group with the log's last sequence as the expected one.
// So the server takes the message only if no other process wrote to the
// log since this one last read it, and what the Log checked is what holds.
// When another process was first, the Log reads on and checks again.
//
// Many writes at once, from many goroutines, go out as one message (a
// group commit). The stream must hold the log's subject only.
package kvlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/internal/streams"
	"github.com/natsaga/natsaga/internal/wirejson"
)

// ErrConflict is returned for a write whose key is not at the revision
// the write expects: another write was first.
var ErrConflict = errors.New("the key changed since it was read")

// ErrClosed is returned for a write made, or still waiting, when the Log
// is closed.
var ErrClosed = errors.New("the log is closed")

// MaxKey is the longest key, in bytes.
const MaxKey = 256

// Options configures [Open].
type Options struct {
	// Stream is the stream of the log; it must exist and hold Subject
	// only.
	Stream string
	// Subject is the subject every message of the log is published on.
	Subject string
	// MaxEntries bounds the writes in one message (default 1,024).
	MaxEntries int
	// MaxBytes bounds a message's payload (default 256 KiB); a single
	// write larger than that is refused.
	MaxBytes int
	// Logger reports the messages of the log that do not decode, which
	// are skipped (default: slog's).
	Logger *slog.Logger
	// PruneEvery is how often, at most, the Log forgets the values of
	// messages the stream no longer holds (expired), as it learns of them
	// when it syncs (default 10 minutes).
	PruneEvery time.Duration
	// MaxValues bounds the values the Log holds in memory (default
	// 262,144): beyond it, the values written first are let go, their
	// keys and revisions kept, and [Log.Value] reads such a value again
	// from the server. The stream must allow direct gets.
	MaxValues int
	// MaxValueBytes bounds the bytes of the values held, as MaxValues
	// bounds their number (default 256 MiB): a value may be as large as
	// a message, so a count alone does not bound the memory they take.
	// The value written last is held whatever its size.
	MaxValueBytes int
}

// Entry is one write: Value for Key, if Key is at revision Rev (0: the
// key has no value).
type Entry struct {
	Key   string
	Value json.RawMessage
	Rev   uint64
}

// Log is one process's view of a log: the last value and revision of
// every key, from the messages read so far. It is safe for concurrent
// use.
type Log struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string
	max     int
	bytes   int
	log     *slog.Logger

	mu    sync.Mutex
	items map[string]item
	// held lists the values held, from held[head] on, in the order they
	// were written: the first are let go beyond maxValues, or beyond
	// maxValueBytes of values held (heldBytes).
	held          []heldValue
	head          int
	maxValues     int
	maxValueBytes int
	heldBytes     int
	last          uint64        // the sequence of the last message applied
	moved         chan struct{} // closed, and replaced, when last moves
	// empty is set when the server holds no message of the log, those
	// read having expired: a write then expects none.
	empty bool
	// floor is the stream's first sequence when the Log last forgot the
	// values of expired messages, at pruned.
	floor      uint64
	pruned     time.Time
	pruneEvery time.Duration
	// mine holds the messages this Log is publishing, by id. The
	// follower applies such a message from its writes, without decoding
	// it, and notes its sequence: after a publish whose answer was lost,
	// that tells whether the message landed.
	mine map[string]*flight

	smu  sync.Mutex
	next *syncRound

	// hold, write-locked, keeps the follower from taking in messages
	// ([Log.Hold]).
	hold sync.RWMutex

	conflicts atomic.Int64
	// written and entries count the messages this Log stored, and the
	// writes they held.
	written, entries atomic.Int64

	queue  chan []*write
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	follow jetstream.ConsumeContext
	// forget deletes the consumer that follow reads, once it stops.
	forget func()
}

type item struct {
	value json.RawMessage // nil once let go
	rev   uint64
}

// heldValue is a value the Log holds: key's, written at rev.
type heldValue struct {
	key string
	rev uint64
}

// write is an [Entry] waiting to be committed.
type write struct {
	Entry
	size   int
	done   chan struct{}
	closed <-chan struct{} // the Log's
	rev    uint64
	err    error
}

// Decode returns the writes of a message of a log, in the order they
// were made. It returns an error when data is not such a message.
func Decode(data []byte) ([]Entry, error) {
	_, es, err := decode(data)
	return es, err
}

func decode(data []byte) (id string, es []Entry, err error) {
	// wirejson reads it as encoding/json would, in under a third of the
	// time (BenchmarkDecode: 255 against 899 µs for 256 records): every
	// copy of a role, and the coordinator, reads every message of the
	// logs it follows.
	m, err := wirejson.DecodeLogMessage(data)
	if err != nil {
		return "", nil, fmt.Errorf("kvlog message: %w", err)
	}
	es = make([]Entry, len(m.Entries))
	for i, e := range m.Entries {
		if e.Key == "" || len(e.Key) > MaxKey {
			return "", nil, fmt.Errorf("kvlog message: entry %d: key of %d bytes (1 to %d)", i, len(e.Key), MaxKey)
		}
		if len(e.Value) == 0 || string(e.Value) == "null" {
			return "", nil, fmt.Errorf("kvlog message: entry %d (%s): no value", i, e.Key)
		}
		es[i] = Entry{Key: e.Key, Value: e.Value}
	}
	return m.ID, es, nil
}

// AppendMessage appends to dst the message of the log holding es, named
// id, as a Log publishes it and [Decode] reads it. Each entry's Value must
// be a JSON value.
func AppendMessage(dst []byte, id string, es []Entry) []byte {
	// Room for the whole message at once (enough when no string needs an
	// escape): growing it entry by entry took 4 % of an agent's CPU in
	// natsaga-bench, and BenchmarkAppendMessage's 256 records 2.5 times
	// as long (3.4 times the bytes).
	n := len(`{"id":"","entries":[]}`) + len(id)
	for _, e := range es {
		n += len(`{"key":"","value":},`) + len(e.Key) + len(e.Value)
	}
	if cap(dst)-len(dst) < n {
		dst = append(make([]byte, 0, len(dst)+n), dst...)
	}
	dst = append(dst, `{"id":`...)
	dst = wirejson.AppendString(dst, id)
	dst = append(dst, `,"entries":[`...)
	for i, e := range es {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"key":`...)
		dst = wirejson.AppendString(dst, e.Key)
		dst = append(dst, `,"value":`...)
		dst = append(dst, e.Value...)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// Open reads the log of opts to its end and follows it. It returns an
// error when the stream cannot be read before ctx ends.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Log, error) {
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = 1024
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 256 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PruneEvery <= 0 {
		opts.PruneEvery = 10 * time.Minute
	}
	if opts.MaxValues <= 0 {
		opts.MaxValues = DefaultMaxValues
	}
	if opts.MaxValueBytes <= 0 {
		opts.MaxValueBytes = DefaultMaxValueBytes
	}
	st, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", opts.Subject, err)
	}
	l := &Log{
		js: js, stream: st, subject: opts.Subject, max: opts.MaxEntries, bytes: opts.MaxBytes, log: opts.Logger,
		items: map[string]item{}, moved: make(chan struct{}), mine: map[string]*flight{},
		pruneEvery: opts.PruneEvery, pruned: time.Now(), maxValues: opts.MaxValues, maxValueBytes: opts.MaxValueBytes,
		queue: make(chan []*write, opts.MaxEntries), closed: make(chan struct{}),
	}
	cons, err := js.OrderedConsumer(ctx, opts.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{opts.Subject}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, fmt.Errorf("log %s: %w", opts.Subject, err)
	}
	l.forget = func() { streams.Forget(js, opts.Stream, cons) }
	if l.follow, err = cons.Consume(l.apply, jetstream.PullExpiry(streams.ReadExpiry), jetstream.PullHeartbeat(streams.ReadHeartbeat)); err != nil {
		l.forget()
		return nil, fmt.Errorf("log %s: %w", opts.Subject, err)
	}
	if err := l.Sync(ctx); err != nil {
		l.follow.Stop()
		l.forget()
		return nil, err
	}
	l.wg.Add(1)
	go l.commits()
	return l, nil
}

// Close stops following the log and fails the writes not committed yet
// with [ErrClosed].
func (l *Log) Close() {
	l.once.Do(func() {
		close(l.closed)
		l.follow.Stop()
		l.wg.Wait()
		l.forget()
	})
}

// DefaultMaxValues is the values a Log holds in memory unless
// Options.MaxValues says otherwise.
const DefaultMaxValues = 1 << 18

// DefaultMaxValueBytes is the bytes of values a Log holds in memory
// unless Options.MaxValueBytes says otherwise: far above what
// DefaultMaxValues records of a few hundred bytes take.
const DefaultMaxValueBytes = 256 << 20

// Rev returns the revision of key as last read (0 when the key has no
// value). Call [Log.Sync] first to read every value written before.
func (l *Log) Rev(key string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.items[key].rev
}

// Value returns key's value and its revision as last read (nil and 0 when
// the key has none), reading the value from the server when the Log let
// it go (Options.MaxValues). A value whose message the server no longer
// holds (expired) is none. Call [Log.Sync] first to read every value
// written before.
func (l *Log) Value(ctx context.Context, key string) (json.RawMessage, uint64, error) {
	l.mu.Lock()
	it := l.items[key]
	l.mu.Unlock()
	if it.value != nil || it.rev == 0 {
		return it.value, it.rev, nil
	}
	m, err := l.stream.GetMsg(ctx, it.rev)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("log %s: read %s at %d: %w", l.subject, key, it.rev, err)
	}
	_, es, err := decode(m.Data)
	if err != nil {
		return nil, 0, fmt.Errorf("log %s: read %s at %d: %w", l.subject, key, it.rev, err)
	}
	for i := len(es) - 1; i >= 0; i-- {
		if es[i].Key == key {
			return es[i].Value, it.rev, nil
		}
	}
	return nil, 0, fmt.Errorf("log %s: the message at %d holds no value of %s", l.subject, it.rev, key)
}

// set takes in key's value as written at rev, and lets the first values
// held go beyond maxValues or maxValueBytes; never the one it takes in.
// l.mu is held.
func (l *Log) set(key string, value json.RawMessage, rev uint64) {
	l.heldBytes += len(value) - len(l.items[key].value)
	l.items[key] = item{value: value, rev: rev}
	l.held = append(l.held, heldValue{key: key, rev: rev})
	for n := len(l.held) - l.head; n > 1 && (n > l.maxValues || l.heldBytes > l.maxValueBytes); n-- {
		h := l.held[l.head]
		l.held[l.head] = heldValue{}
		l.head++
		// A key written again since holds a later value, still held.
		if it, ok := l.items[h.key]; ok && it.rev == h.rev {
			l.heldBytes -= len(it.value)
			l.items[h.key] = item{rev: it.rev}
		}
	}
	if l.head > 4096 && l.head > len(l.held)/2 {
		l.held = append(l.held[:0], l.held[l.head:]...)
		l.head = 0
	}
}

// Last returns the sequence of the last message read.
func (l *Log) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Hold keeps the Log from taking in the messages other processes write
// until release is called, as if it lagged behind the log: for tests of
// what a process that lags does. Its own writes are still taken in.
func (l *Log) Hold() (release func()) {
	l.hold.Lock()
	var once sync.Once
	return func() { once.Do(l.hold.Unlock) }
}

// apply takes in a message of the log, delivered in order.
func (l *Log) apply(m jetstream.Msg) {
	l.hold.RLock()
	defer l.hold.RUnlock()
	meta, err := m.Metadata()
	if err != nil {
		l.log.Error("log message without metadata", "subject", l.subject, "err", err)
		return
	}
	seq := meta.Sequence.Stream
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq <= l.last {
		return // a message this Log wrote, applied when it was acknowledged
	}
	if f := l.mine[string(peekID(m.Data()))]; f != nil {
		f.seq = seq
		l.store(f.group, seq)
	} else if _, es, err := decode(m.Data()); err != nil {
		l.log.Error("skipping a log message that does not decode", "subject", l.subject, "seq", seq, "err", err)
	} else {
		for _, e := range es {
			l.set(e.Key, e.Value, seq)
		}
	}
	l.advance(seq)
}

// flight is a message this Log is publishing: its writes, and the
// sequence the follower read it at (0 until then).
type flight struct {
	group []*write
	seq   uint64
}

// peekID returns the id a message of the log starts with, as this
// package writes them; nil for any other.
func peekID(data []byte) []byte {
	rest, ok := bytes.CutPrefix(data, []byte(`{"id":"`))
	if !ok {
		return nil
	}
	id, _, ok := bytes.Cut(rest, []byte(`"`))
	if !ok {
		return nil
	}
	return id
}

// store sets the keys of group as written by the message at seq. l.mu is
// held.
func (l *Log) store(group []*write, seq uint64) {
	for _, w := range group {
		l.set(w.Key, w.Value, seq)
	}
}

// advance moves last to seq and wakes those waiting for it. l.mu is held.
func (l *Log) advance(seq uint64) {
	l.last, l.empty = seq, false
	close(l.moved)
	l.moved = make(chan struct{})
}

// ReadTo returns once the message at seq, or a later one, has been read;
// or, should the server no longer hold it (expired), once what it holds
// has been read. It returns an error when that cannot be done before ctx
// ends. seq is a sequence a Log read: one another process names.
func (l *Log) ReadTo(ctx context.Context, seq uint64) error {
	if l.Last() >= seq {
		return nil
	}
	wait, cancel := context.WithTimeout(ctx, time.Second)
	err := l.reach(wait, seq)
	cancel()
	if err == nil || ctx.Err() != nil || errors.Is(err, ErrClosed) {
		return err
	}
	return l.Sync(ctx)
}

// Sync returns once every message stored in the log before it was called
// has been read, or with an error when the log cannot be read before ctx
// ends.
func (l *Log) Sync(ctx context.Context) error {
	r := l.round()
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("log %s: %w", l.subject, ctx.Err())
	}
	if r.err != nil {
		return r.err
	}
	return l.reach(ctx, r.target)
}

// syncRound is one request for the log's last sequence, shared by every
// Sync called before it was sent.
type syncRound struct {
	done   chan struct{}
	target uint64
	err    error
}

func (l *Log) round() *syncRound {
	l.smu.Lock()
	defer l.smu.Unlock()
	if l.next != nil {
		return l.next
	}
	r := &syncRound{done: make(chan struct{})}
	l.next = r
	go func() {
		l.smu.Lock()
		l.next = nil // from here on, a Sync waits for a request sent after it began
		l.smu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.target, r.err = l.lastStored(ctx)
		close(r.done)
	}()
	return r
}

// lastStored asks the server for the sequence of the log's last message,
// 0 when it holds none. The stream holds the log only, and its messages
// expire oldest first, so that is the stream's last sequence while it
// holds any.
func (l *Log) lastStored(ctx context.Context) (uint64, error) {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("log %s: %w", l.subject, err)
	}
	l.prune(info.State.FirstSeq)
	if info.State.Msgs == 0 {
		l.mu.Lock()
		l.empty = l.last <= info.State.LastSeq
		l.mu.Unlock()
		return 0, nil
	}
	return info.State.LastSeq, nil
}

// prune forgets the values written by messages before first, the stream's
// first sequence, which have expired: a Log opened now would not read
// them either. It scans every key, so it runs at most every PruneEvery.
func (l *Log) prune(first uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if first <= l.floor || time.Since(l.pruned) < l.pruneEvery {
		return
	}
	for k, it := range l.items {
		if it.rev < first {
			l.heldBytes -= len(it.value)
			delete(l.items, k)
		}
	}
	l.floor, l.pruned = first, time.Now()
}

// reach waits until the message at seq, or a later one, has been read.
func (l *Log) reach(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		last, moved := l.last, l.moved
		l.mu.Unlock()
		if last >= seq {
			return nil
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return fmt.Errorf("log %s: waiting for message %d, read up to %d: %w", l.subject, seq, last, ctx.Err())
		case <-l.closed:
			return ErrClosed
		}
	}
}

// Put writes e, committed with the writes made at the same time, and
// returns its revision. It returns an error wrapping [ErrConflict] when
// e.Key is not at revision e.Rev, and another when the write could not be
// stored before ctx ended or the log was closed: it may then have been
// stored all the same.
func (l *Log) Put(ctx context.Context, e Entry) (uint64, error) {
	w, err := l.prepare(e)
	if err != nil {
		return 0, err
	}
	if err := l.send(ctx, []*write{w}); err != nil {
		return 0, err
	}
	return w.wait(ctx)
}

// PutAll writes each of es as [Log.Put] does, in one message when they
// fit in what is left of the one being gathered, and returns the revision
// or the error of each.
func (l *Log) PutAll(ctx context.Context, es []Entry) ([]uint64, []error) {
	revs, errs := make([]uint64, len(es)), make([]error, len(es))
	ws := make([]*write, len(es))
	var unit []*write
	for i, e := range es {
		if ws[i], errs[i] = l.prepare(e); errs[i] == nil {
			unit = append(unit, ws[i])
		}
	}
	if len(unit) == 0 {
		return revs, errs
	}
	if err := l.send(ctx, unit); err != nil {
		for i, w := range ws {
			if w != nil {
				errs[i] = err
			}
		}
		return revs, errs
	}
	for i, w := range ws {
		if w != nil {
			revs[i], errs[i] = w.wait(ctx)
		}
	}
	return revs, errs
}

// prepare checks e and returns it as a write to send.
func (l *Log) prepare(e Entry) (*write, error) {
	if e.Key == "" || len(e.Key) > MaxKey {
		return nil, fmt.Errorf("log %s: key of %d bytes (1 to %d)", l.subject, len(e.Key), MaxKey)
	}
	if !json.Valid(e.Value) || string(e.Value) == "null" {
		return nil, fmt.Errorf("log %s: key %s: the value is not a JSON value", l.subject, e.Key)
	}
	w := &write{Entry: e, size: len(e.Key) + len(e.Value) + 24, done: make(chan struct{}), closed: l.closed}
	if w.size > l.bytes-64 {
		return nil, fmt.Errorf("log %s: key %s: a write of %d bytes, over the %d of a message", l.subject, e.Key, w.size, l.bytes)
	}
	return w, nil
}

// send hands ws to the committer, to be committed together.
func (l *Log) send(ctx context.Context, ws []*write) error {
	if l.isClosed() {
		return ErrClosed
	}
	select {
	case l.queue <- ws:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("log %s: %w", l.subject, ctx.Err())
	case <-l.closed:
		return ErrClosed
	}
}

func (w *write) wait(ctx context.Context) (uint64, error) {
	select {
	case <-w.done:
		return w.rev, w.err
	case <-ctx.Done():
		return 0, fmt.Errorf("write %s: %w", w.Key, ctx.Err())
	case <-w.closed:
		select {
		case <-w.done: // committed as the log closed
			return w.rev, w.err
		default:
			return 0, ErrClosed
		}
	}
}

func (w *write) finish(rev uint64, err error) {
	w.rev, w.err = rev, err
	close(w.done)
}

// commits commits the queued writes in groups until the Log is closed:
// what is queued when a group starts, up to MaxEntries writes and
// MaxBytes, the writes sent together kept together while they fit.
func (l *Log) commits() {
	defer l.wg.Done()
	var group []*write
	size := 0
	flush := func() {
		if len(group) > 0 {
			l.commit(group)
			group, size = group[:0], 0
		}
	}
	add := func(ws []*write) {
		for _, w := range ws {
			if len(group) == l.max || size+w.size > l.bytes-64 {
				flush()
			}
			group = append(group, w)
			size += w.size
		}
	}
	for {
		select {
		case ws := <-l.queue:
			add(ws)
		case <-l.closed:
			l.failQueued()
			return
		}
	more:
		for len(group) < l.max {
			select {
			case ws := <-l.queue:
				add(ws)
			default:
				break more
			}
		}
		flush()
	}
}

func (l *Log) failQueued() {
	for {
		select {
		case ws := <-l.queue:
			for _, w := range ws {
				w.finish(0, ErrClosed)
			}
		default:
			return
		}
	}
}

// attempts bounds the tries of a group whose publish fails other than by
// a conflict.
const attempts = 3

// commit checks each write of group against the keys' revisions, and
// publishes those that hold as one message expecting the log's last
// sequence. When another process wrote first, it reads on and checks
// again.
func (l *Log) commit(group []*write) {
	failures := 0
	for len(group) > 0 {
		l.mu.Lock()
		expect := l.last
		if l.empty {
			expect = 0
		}
		taken := map[string]bool{}
		pending := group[:0]
		for _, w := range group {
			if l.items[w.Key].rev != w.Rev || taken[w.Key] {
				w.finish(0, fmt.Errorf("write %s at revision %d: %w", w.Key, w.Rev, ErrConflict))
				continue
			}
			taken[w.Key] = true
			pending = append(pending, w)
		}
		group = pending
		if len(group) == 0 {
			l.mu.Unlock()
			return
		}
		id := nuid.Next()
		l.mine[id] = &flight{group: group}
		l.mu.Unlock()

		rev, err := l.publish(id, group, expect)
		if err != nil && !jserr.Conflict(err) {
			// The answer may have been lost with the message stored: the
			// follower, reading to the log's end, tells.
			_ = l.syncWithin(10 * time.Second)
		}
		l.mu.Lock()
		seen := l.mine[id].seq
		delete(l.mine, id)
		l.mu.Unlock()
		switch {
		case err == nil:
		case seen != 0:
			rev, err = seen, nil // stored: the follower read it
		case jserr.Conflict(err):
			// Another process wrote first (or what this one read last has
			// expired): read on, and check again.
			l.conflicts.Add(1)
			if err := l.readOn(expect, err); err != nil {
				l.finishAll(group, 0, err)
				return
			}
			continue
		default:
			failures++
			if failures == attempts || l.isClosed() {
				l.finishAll(group, 0, fmt.Errorf("log %s: %w", l.subject, err))
				return
			}
			continue
		}
		l.written.Add(1)
		l.entries.Add(int64(len(group)))
		l.mu.Lock()
		if rev > l.last { // else the follower has applied it
			l.store(group, rev)
			l.advance(rev)
		}
		l.mu.Unlock()
		l.finishAll(group, rev, nil)
		return
	}
}

// readOn reads the log past expect after a write expecting it was refused
// with err: up to the last sequence the server named in err, or, when it
// named none past expect (what this Log read last has expired), to the
// end the server holds.
func (l *Log) readOn(expect uint64, err error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		n, perr := strconv.ParseUint(strings.TrimPrefix(apiErr.Description, "wrong last sequence: "), 10, 64)
		if perr == nil && n > expect {
			return l.ReadTo(ctx, n)
		}
	}
	return l.Sync(ctx)
}

// Written returns how many messages this Log stored, and the writes they
// held.
func (l *Log) Written() (messages, writes int64) { return l.written.Load(), l.entries.Load() }

// Conflicts counts the messages this Log published that the server
// refused because another process had written to the log first.
func (l *Log) Conflicts() int64 { return l.conflicts.Load() }

// syncWithin is [Log.Sync], given d.
func (l *Log) syncWithin(d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return l.Sync(ctx)
}

func (l *Log) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

func (l *Log) finishAll(group []*write, rev uint64, err error) {
	for _, w := range group {
		w.finish(rev, err)
	}
}

// publish stores group as message id, expecting the log's last message
// to be at expect, and returns its sequence.
func (l *Log) publish(id string, group []*write, expect uint64) (uint64, error) {
	es := make([]Entry, len(group))
	for i, w := range group {
		es[i] = w.Entry
	}
	data := AppendMessage(nil, id, es)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: l.subject, Data: data},
		jetstream.WithExpectLastSequencePerSubject(expect))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// Scan reads the log on subject of stream once, from its first message to
// the last stored when Scan is called, and calls fn with each message's
// sequence and writes, or the error that it does not decode. It returns
// an error when the stream cannot be read before ctx ends.
func Scan(ctx context.Context, js jetstream.JetStream, stream, subject string, fn func(seq uint64, es []Entry, err error)) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("log %s: %w", subject, err)
	}
	last, err := st.GetLastMsgForSubject(ctx, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("log %s: %w", subject, err)
	}
	return scanTo(ctx, js, stream, subject, last.Sequence, fn)
}

// scanTo is Scan up to the message at sequence last, or the end of the
// log if that message is gone by the time the scan gets there.
func scanTo(ctx context.Context, js jetstream.JetStream, stream, subject string, last uint64, fn func(seq uint64, es []Entry, err error)) error {
	err := streams.Read(ctx, js, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}},
		func(m jetstream.Msg, meta *jetstream.MsgMetadata) bool {
			es, err := Decode(m.Data())
			fn(meta.Sequence.Stream, es, err)
			// The last message may be gone by now (deleted, or the
			// stream purged): the end of what there is ends the scan too.
			return meta.Sequence.Stream < last
		})
	if err != nil {
		return fmt.Errorf("log %s: %w", subject, err)
	}
	return nil
}
