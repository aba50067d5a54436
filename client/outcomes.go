package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/streams"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Stored returns every saga stored in the saga bucket, read-only: the
// sagas that ended that the coordinator still keeps (active sagas are in
// its saga log; coordinators before the log also stored them in the
// bucket, as they were when last stored). With ranked, only the sagas a
// simulation driver ranked. It returns the first error of [Client.ScanStored].
func (c *Client) Stored(ctx context.Context, ranked bool) ([]saga.Execution, error) {
	return collect(c.ScanStored(ctx, nil), ranked)
}

// collect returns the sagas of seq, with ranked only those a simulation
// driver ranked, or seq's first error.
func collect(seq iter.Seq2[saga.Execution, error], ranked bool) ([]saga.Execution, error) {
	var xs []saga.Execution
	for x, err := range seq {
		if err != nil {
			return nil, err
		}
		if !ranked || x.Rank > 0 {
			xs = append(xs, x)
		}
	}
	return xs, nil
}

// ScanStored returns the sagas stored in the saga bucket whose id keep
// accepts (every saga when keep is nil), read-only, one at a time as they
// are read: a caller that keeps a few of many sagas holds only those. keep
// sees each id before its value is decoded, so the sagas it refuses cost
// no decoding. The sequence holds the sagas that ended that the
// coordinator still keeps; active sagas only as coordinators before the
// saga log stored them there, maybe steps behind the coordinator's state,
// which [Client.Status] returns. It ends after the last value stored when the
// sequence began, or with an error: the bucket cannot be read, ctx ends,
// or a value is not the saga its key names (an error wrapping
// [ErrBadStored]). Each range over it reads the bucket anew.
func (c *Client) ScanStored(ctx context.Context, keep func(id string) bool) iter.Seq2[saga.Execution, error] {
	return c.scan(ctx, keep, wirejson.DecodeExecution)
}

// ScanEnded returns the sagas stored in the saga bucket as
// [Client.ScanStored] does, each with only the last transition of its
// history and none of its step results: what an outcome log
// (saga.Execution.Outcome) or a report of ended sagas reads, in less time
// and memory.
func (c *Client) ScanEnded(ctx context.Context, keep func(id string) bool) iter.Seq2[saga.Execution, error] {
	return c.scan(ctx, keep, wirejson.DecodeEnded)
}

// scan is ScanStored, each saga read with decode.
//
// The values are decoded on up to GOMAXPROCS goroutines, scanChunk at a
// time, while the watch reads on, and yielded in the order read: at
// 745,742 sagas, floodsim's report spent 11 of the 17 s it read the
// bucket decoding, on the goroutine that read the watch (BENCHMARKS.md,
// "Where a simulation's time goes").
func (c *Client) scan(ctx context.Context, keep func(id string) bool, decode func([]byte) (saga.Execution, error)) iter.Seq2[saga.Execution, error] {
	return func(yield func(saga.Execution, error) bool) {
		fail := func(err error) {
			yield(saga.Execution{}, fmt.Errorf("bucket %s: %w", messages.SagaBucket, noJetStream(err)))
		}
		js, err := jetstream.New(c.nc)
		if err != nil {
			fail(err)
			return
		}
		kv, err := js.KeyValue(ctx, messages.SagaBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			err = &notThere{what: "not found", err: err}
		}
		if err != nil {
			fail(err)
			return
		}
		w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			fail(err)
			return
		}
		d := newDecoding(decode)
		defer func() {
			d.wait()
			// Stopped, the watcher closes its updates once the delivery
			// it may be blocked in is taken: reading them to the end
			// leaves none of its goroutines behind when the caller stops
			// early.
			_ = w.Stop()
			for range w.Updates() {
			}
		}()
		// give yields the sagas of the chunk decoded first; false when
		// the caller stopped, ctx ended or a value was refused.
		give := func() bool {
			for _, r := range d.next() {
				if err := ctx.Err(); err != nil {
					fail(fmt.Errorf("reading the sagas: %w", err))
					return false
				}
				if r.err != nil {
					fail(r.err)
					return false
				}
				if !yield(r.x, nil) {
					return false
				}
			}
			return true
		}
		var chunk []stored
		for e := range w.Updates() {
			if e == nil { // every stored value seen
				d.start(chunk)
				for d.pending() {
					if !give() {
						return
					}
				}
				return
			}
			id, ok := strings.CutPrefix(e.Key(), messages.SagaKeyPrefix)
			if !ok || (keep != nil && !keep(id)) {
				continue
			}
			if chunk = append(chunk, stored{key: e.Key(), id: id, value: e.Value()}); len(chunk) < scanChunk {
				continue
			}
			d.start(chunk)
			chunk = nil
			if d.full() && !give() {
				return
			}
		}
		// The updates end before the marker when ctx ends or the
		// connection closes.
		err = ctx.Err()
		if err == nil {
			err = errors.New("the watch ended before the last stored value")
		}
		fail(fmt.Errorf("reading the sagas: %w", err))
	}
}

// scanChunk is how many stored sagas one goroutine of a scan decodes at a
// time.
const scanChunk = 512

// stored is a value of the saga bucket read by a scan, not yet decoded.
type stored struct {
	key, id string
	value   []byte
}

// decoded is a stored saga decoded, or why it could not be.
type decoded struct {
	x   saga.Execution
	err error
}

// decoding decodes chunks of stored sagas on goroutines of their own, at
// most GOMAXPROCS at a time, and hands them back in the order started.
type decoding struct {
	decode  func([]byte) (saga.Execution, error)
	cores   chan struct{}
	started []chan []decoded // oldest first
}

func newDecoding(decode func([]byte) (saga.Execution, error)) *decoding {
	return &decoding{decode: decode, cores: make(chan struct{}, runtime.GOMAXPROCS(0))}
}

// start decodes chunk on a goroutine of its own, when a core is free.
func (d *decoding) start(chunk []stored) {
	if len(chunk) == 0 {
		return
	}
	done := make(chan []decoded, 1)
	d.started = append(d.started, done)
	d.cores <- struct{}{}
	go func() {
		defer func() { <-d.cores }()
		rs := make([]decoded, len(chunk))
		for i, s := range chunk {
			x, err := d.decode(s.value)
			switch {
			case err != nil:
				err = fmt.Errorf("key %s: %w: %w", s.key, ErrBadStored, err)
			case x.ID != s.id:
				err = fmt.Errorf("key %s: %w: it holds saga %q", s.key, ErrBadStored, x.ID)
			}
			if rs[i] = (decoded{x, err}); err != nil {
				rs = rs[:i+1]
				break
			}
		}
		done <- rs
	}()
}

// full reports whether twice as many chunks as cores wait to be taken: the
// scan then takes one before it reads on, so it holds a bounded number.
func (d *decoding) full() bool { return len(d.started) >= 2*cap(d.cores) }

// pending reports whether a chunk started has not been taken.
func (d *decoding) pending() bool { return len(d.started) > 0 }

// next waits for the chunk started first and returns its sagas.
func (d *decoding) next() []decoded {
	rs := <-d.started[0]
	d.started = d.started[1:]
	return rs
}

// wait waits for every chunk started, so none of its goroutines outlives
// the scan.
func (d *decoding) wait() {
	for d.pending() {
		d.next()
	}
}

// WriteOutcomes writes the outcome log of the stored sagas (see
// [Client.Stored] and saga.OutcomeLog: one JSON line per saga, sorted by
// id) to w, and returns the log's SHA-256 in hex and how many sagas it
// holds. It reads them as [Client.ScanEnded] does. With ranked, only the
// sagas a simulation driver ranked: of every run the bucket still keeps
// ([Client.WriteOutcomesOf] writes one run's).
func (c *Client) WriteOutcomes(ctx context.Context, w io.Writer, ranked bool) (digest string, n int, err error) {
	xs, err := collect(c.ScanEnded(ctx, nil), ranked)
	if err != nil {
		return "", 0, err
	}
	return writeOutcomes(w, xs)
}

// WriteOutcomesOf is [Client.WriteOutcomes] of the stored sagas whose id
// keep accepts: a driver's own run, on a server whose bucket keeps the
// sagas of earlier runs too. A saga keep accepts that is not stored
// (never started, or still active) is not in the log; n says how many
// are.
func (c *Client) WriteOutcomesOf(ctx context.Context, w io.Writer, keep func(id string) bool) (digest string, n int, err error) {
	xs, err := collect(c.ScanEnded(ctx, keep), false)
	if err != nil {
		return "", 0, err
	}
	return writeOutcomes(w, xs)
}

func writeOutcomes(w io.Writer, xs []saga.Execution) (digest string, n int, err error) {
	log, digest, err := saga.OutcomeLogWith(xs, wirejson.AppendOutcomeLine)
	if err != nil {
		return "", 0, err
	}
	if _, err := w.Write(log); err != nil {
		return "", 0, fmt.Errorf("outcome log: %w", err)
	}
	return digest, len(xs), nil
}

// Watch configures [Client.Watch].
type Watch struct {
	// Saga and Status filter the events; empty means any. Saga is the
	// saga type's subject, as events name it, or the name of a definition
	// the coordinator's bucket holds; any other is an error.
	Saga, Status string
	// All starts from the oldest event kept rather than from now.
	All bool
	// Last, when positive, starts from the latest Last events kept that
	// match (all of them when fewer are kept) rather than from now. It
	// excludes All.
	Last int
	// KeptOnly ends the sequence once the events kept when Watch was
	// called, those All or Last select, have come, rather than going on
	// with the new ones. It needs All or Last.
	KeptOnly bool
}

// noEventStream is Watch's error for err, an error opening the event
// stream, saying why there is none when there is none.
func noEventStream(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return &notThere{what: "watch: event stream " + messages.EventStream, err: err}
	}
	return fmt.Errorf("watch: %w", noJetStream(err))
}

// noJetStream says so when err, of a JetStream request, is the server's
// having no JetStream: no responders to its API, or JetStream off.
func noJetStream(err error) error {
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return fmt.Errorf("%w (the server has no JetStream, which natsaga needs: start nats-server with -js)", err)
	}
	return err
}

// notThere is the error for a stream or bucket that a coordinator
// creates, when none has run on the server: it says so, and is err (the
// server's not-found error) for errors.Is.
type notThere struct {
	what string
	err  error
}

func (e *notThere) Error() string {
	return e.what + ": no coordinator has run on this server"
}

func (e *notThere) Unwrap() error { return e.err }

// CheckEventStatus returns an error unless status is one a saga event can
// have: every status but pending, which a saga is stored with, not changed
// to.
func CheckEventStatus(status string) error {
	if s := saga.Status(status); !s.Valid() || s == saga.Pending {
		return fmt.Errorf("no event has status %q: in_progress, compensating, completed, rolled_back, timed_out or failed", status)
	}
	return nil
}

// Watch returns the saga events of the event stream that match f, as they
// come, until ctx ends (the sequence then ends with no error), the kept
// events f.KeptOnly asks for have come, or the stream fails (the sequence
// ends with the error). An event that does not decode is logged and
// skipped. Range the sequence once: it holds one consumer of the stream,
// made by Watch, which goes when the range ends or ctx does, whichever is
// first. Watch returns an error when f names a saga that is not a
// token or a status [CheckEventStatus] refuses, or asks for something
// contradictory (wrapping [ErrBadRequest]), when f names a saga type no
// stored definition has (wrapping [ErrNotFound]), and when the stream
// cannot be read.
//
// Events are best effort (docs/protocol.md, "Event"): a coordinator that
// stops, or loses its lease to a standby, may not publish the events of
// its last moments, though the sagas' states are stored. For every saga's
// end, read the bucket ([Client.ScanStored], [Client.WriteOutcomes]), not
// the events.
func (c *Client) Watch(ctx context.Context, f Watch) (iter.Seq2[messages.Event, error], error) {
	if err := f.check(); err != nil {
		return nil, fmt.Errorf("watch: %w: %w", ErrBadRequest, err)
	}
	sagaTok, statusTok := "*", "*"
	if f.Status != "" {
		statusTok = f.Status
	}
	js, err := jetstream.New(c.nc)
	if err != nil {
		return nil, err
	}
	if f.Saga != "" {
		if sagaTok, err = subjectOf(ctx, js, f.Saga); err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
	}
	// The stream keeps the events in batches (messages.EventBatch), so
	// what is counted and skipped here are batches: the latest Last
	// events are among the latest Last batches, each of one event or
	// more.
	filter := messages.EventLogSubject(sagaTok, statusTok)
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy}
	kept, skip, last, err := f.start(ctx, js, &cfg, sagaTok == "*" && statusTok == "*")
	if err != nil {
		return nil, err
	}
	if f.KeptOnly && kept == 0 {
		return func(func(messages.Event, error) bool) {}, nil
	}
	cons, err := js.OrderedConsumer(ctx, messages.EventStream, cfg)
	if err != nil {
		return nil, noEventStream(err)
	}
	// Its consumer goes when ctx ends, ranged or not.
	forget := sync.OnceFunc(func() { streams.Forget(js, messages.EventStream, cons) })
	unwatch := context.AfterFunc(ctx, forget)
	return func(yield func(messages.Event, error) bool) {
		defer unwatch()
		defer forget()
		it, err := cons.Messages()
		if err != nil {
			yield(messages.Event{}, fmt.Errorf("watch: %w", err))
			return
		}
		defer it.Stop()
		stop := context.AfterFunc(ctx, it.Stop)
		defer stop()
		// With Last, the kept batches' events are held until the last
		// kept batch is read, and only the latest Last of them given.
		var held []messages.Event
		// inKept is true while kept batches are read: until skip+kept
		// are, the last of them (stream sequence last) is, or the
		// stream holds no more.
		inKept := f.KeptOnly || f.Last > 0
		endKept := func() bool {
			inKept = false
			for _, ev := range held[max(len(held)-f.Last, 0):] {
				if !yield(ev, nil) {
					return false
				}
			}
			held = nil
			return !f.KeptOnly
		}
		// read counts the kept batches read, those skipped and those
		// that do not decode included.
		for read := 0; ; read++ {
			if inKept && read == skip+kept && !endKept() {
				return
			}
			m, err := it.Next()
			if err != nil {
				if ctx.Err() == nil {
					yield(messages.Event{}, fmt.Errorf("watch: %w", err))
				}
				return
			}
			meta, _ := m.Metadata()
			if inKept && meta != nil && meta.Sequence.Stream > last && !endKept() {
				return // a new batch, and only the kept ones were asked for
			}
			if holding := inKept; read >= skip {
				events, err := wirejson.DecodeEventBatch(m.Data())
				switch {
				case err != nil:
					c.log.Warn("bad event batch", "subject", m.Subject(), "err", err)
				case holding && f.Last > 0:
					held = append(held, events...)
					if len(held) > 2*f.Last {
						held = append(held[:0], held[len(held)-f.Last:]...)
					}
				default:
					for _, ev := range events {
						if !yield(ev, nil) {
							return
						}
					}
				}
			}
			if inKept && meta != nil && (meta.NumPending == 0 || meta.Sequence.Stream >= last) && !endKept() {
				return
			}
		}
	}, nil
}

// check returns an error for a Watch whose fields are not tokens, or do
// not go together.
func (f *Watch) check() error {
	for what, v := range map[string]string{"saga": f.Saga, "status": f.Status} {
		if v == "" {
			continue
		}
		if err := messages.CheckToken(what, v); err != nil {
			return err
		}
	}
	if f.Status != "" {
		if err := CheckEventStatus(f.Status); err != nil {
			return err
		}
	}
	switch {
	case f.Last < 0:
		return errors.New("negative Last")
	case f.Last > 0 && f.All:
		return errors.New("All and Last: choose one")
	case f.KeptOnly && !f.All && f.Last == 0:
		return errors.New("KeptOnly needs All or Last")
	}
	return nil
}

// start sets where cfg, filtered for f (on every subject of the event
// stream when unfiltered), starts reading, and returns how many kept
// batches come before the new ones (kept: counted when the sequence must
// end after them or start at the latest Last), how many of the oldest to
// pass over to get there (skip), and the stream's last sequence (last):
// the kept batches end there, or where the stream holds no more.
func (f *Watch) start(ctx context.Context, js jetstream.JetStream, cfg *jetstream.OrderedConsumerConfig, unfiltered bool) (kept, skip int, last uint64, err error) {
	if f.All || f.Last > 0 {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	if !f.KeptOnly && f.Last == 0 {
		return 0, 0, 0, nil
	}
	stream, err := js.Stream(ctx, messages.EventStream)
	if err != nil {
		return 0, 0, 0, noEventStream(err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(cfg.FilterSubjects[0]))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("watch: %w", err)
	}
	matched := uint64(0)
	for _, n := range info.State.Subjects {
		matched += n
	}
	st := info.State
	kept = int(matched)
	if f.Last > 0 && kept > f.Last {
		skip, kept = kept-f.Last, f.Last
	}
	if unfiltered && skip > 0 {
		// Start near the end rather than read past the others: far
		// enough back that the batches up to the last hold the kept
		// ones, whatever messages on other subjects of the stream, or
		// deleted, lie among them. More may be read than kept: the
		// latest Last events of them are given.
		back := uint64(kept) + (st.Msgs - min(matched, st.Msgs)) + uint64(st.NumDeleted)
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = max(st.FirstSeq, st.LastSeq-min(back, st.LastSeq)+1)
		skip, kept = 0, int(st.LastSeq-cfg.OptStartSeq+1)
	}
	return kept, skip, st.LastSeq, nil
}

// subjectOf returns the subject of the saga type named name, as events
// name it: name itself when it is a saga type's subject, or the subject of
// the definitions named name (elevation for elevation_grant), as the
// coordinator's bucket holds them. It returns an error for a name that is
// neither; a bucket that cannot be read, or holds no definitions, leaves
// name as it is.
func subjectOf(ctx context.Context, js jetstream.JetStream, name string) (string, error) {
	kv, err := js.KeyValue(ctx, messages.SagaBucket)
	if err != nil {
		return name, nil
	}
	// A watch, as the operator's permissions allow (a direct get they do
	// not): its stored values come first, then a nil entry.
	w, err := kv.WatchFiltered(ctx, []string{messages.DefinitionKeyPrefix + ">"}, jetstream.IgnoreDeletes())
	if err != nil {
		return name, nil
	}
	defer func() { _ = w.Stop() }()
	var subjects, named []string // every subject; those of definitions named name
	for e := range w.Updates() {
		if e == nil {
			break
		}
		defs, err := saga.ParseFile(e.Value())
		if err != nil || len(defs) != 1 {
			continue
		}
		if d := defs[0]; !slices.Contains(subjects, d.Subject) {
			subjects = append(subjects, d.Subject)
		}
		if d := defs[0]; d.Name == name && !slices.Contains(named, d.Subject) {
			named = append(named, d.Subject)
		}
	}
	switch {
	case len(subjects) == 0 || slices.Contains(subjects, name):
		return name, nil
	case len(named) == 1:
		return named[0], nil
	case len(named) > 1:
		return "", fmt.Errorf("%w: saga %q: its versions have several subjects (%s): give one", ErrBadRequest, name, strings.Join(named, ", "))
	}
	slices.Sort(subjects)
	return "", fmt.Errorf("%w: saga %q: no saga type has that subject or name; the subjects are %s", ErrNotFound, name, strings.Join(subjects, ", "))
}
