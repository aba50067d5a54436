package coordinator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/messages"
)

// ErrLeaseLost ends a term of [Coordinator.Run] when this coordinator could
// not renew its lease in time, or another took it over: the term stops at
// once, and Run stands by to start another (it is logged, not returned).
var ErrLeaseLost = errors.New("coordinator lease lost")

// DefaultLeaseTTL is how long a coordinator's lease lasts unless renewed:
// a standby takes over this long after the active coordinator dies.
const DefaultLeaseTTL = 3 * time.Second

// holder is what the lease says about its holder.
type holder struct {
	// ID is the lease's own, new each term; Copy the coordinator's, as
	// its micro services' metadata says it.
	ID   string `json:"id"`
	Copy string `json:"copy"`
	PID  int    `json:"pid"`
	Host string `json:"host"`
}

// isHolder reports whether data is a lease a coordinator wrote, this
// version or an earlier one: a holder with an id and a pid. An answer
// written there (a micro INFO has an id, but no pid) is not.
func isHolder(data []byte) bool {
	var h holder
	return json.Unmarshal(data, &h) == nil && h.ID != "" && h.PID > 0
}

// lease is this coordinator's hold on [messages.LeaseKey]: one coordinator
// at a time drives the sagas, the others wait as standbys.
type lease struct {
	c    *Coordinator
	data []byte
	rev  uint64
	ttl  time.Duration
	// until is when the lease expires at the earliest, by this process's
	// monotonic clock: the TTL from when the write that set it was sent
	// (the server counts it from when it stored it, later).
	until atomic.Pointer[time.Time]
}

// extend records that a write of the lease sent at sent was stored.
func (l *lease) extend(sent time.Time) {
	u := sent.Add(l.ttl)
	l.until.Store(&u)
}

// runOut reports whether the TTL from the lease's last stored write has run
// out by this process's clock (or no lease is held): the lease may be
// another's now.
func (l *lease) runOut() bool {
	if l == nil {
		return true
	}
	u := l.until.Load()
	return u == nil || !time.Now().Before(*u)
}

// check returns nil when the lease is this coordinator's: surely, by the
// clock, until the TTL from its last stored write has run out; after that,
// when the server still holds it (a renewal acknowledged late, or one
// still to come). It returns an error wrapping ErrLeaseLost otherwise:
// the process stood still longer than the lease, say, and another
// coordinator may have taken over without this one's renewal noticing yet.
func (l *lease) check(ctx context.Context) error {
	if l == nil {
		return fmt.Errorf("no lease held: %w", ErrLeaseLost)
	}
	if u := l.until.Load(); u != nil && time.Now().Before(*u) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	e, err := l.c.kv.Get(ctx, messages.LeaseKey)
	switch {
	case err == nil && bytes.Equal(e.Value(), l.data):
		return nil
	case err == nil || errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("lease not renewed within its TTL and held by another or none: %w", ErrLeaseLost)
	default:
		return fmt.Errorf("lease not renewed within its TTL and not read (%w): %w", err, ErrLeaseLost)
	}
}

func (c *Coordinator) newLease() *lease {
	host, _ := os.Hostname()
	data, _ := json.Marshal(holder{ID: nuid.Next(), Copy: c.copy, PID: os.Getpid(), Host: host})
	return &lease{c: c, data: data, ttl: c.opts.LeaseTTL}
}

// acquire waits until the lease is free and takes it. It returns ctx's
// error when ctx ends first.
func (l *lease) acquire(ctx context.Context) error {
	logged := false
	// seen is the revision of another's lease last read, and since when
	// it has not moved: a lease its holder keeps moves every third of its
	// TTL.
	var seen uint64
	var since time.Time
	// removing is the revision of the lease key this loop last said it
	// removes, and removeFailed whether it said a removal failed: a
	// removal the server keeps refusing (its storage full) is said once,
	// not every quarter of the TTL.
	var removing uint64
	removeFailed := false
	for {
		sent := time.Now()
		rev, err := l.c.kv.Create(ctx, messages.LeaseKey, l.data, jetstream.KeyTTL(l.ttl))
		if err == nil {
			l.rev = rev
			l.extend(sent)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("lease: %w", err)
		}
		e, err := l.c.kv.Get(ctx, messages.LeaseKey)
		if err == nil && e.Revision() != seen {
			seen, since = e.Revision(), time.Now()
		}
		if err == nil && (!isHolder(e.Value()) || l.earlierTerm(e.Value()) ||
			time.Since(since) > l.ttl && l.withoutTTL(ctx, e.Revision())) {
			// No coordinator wrote that, and it may never expire; or this
			// coordinator did, in a term that ended without releasing it
			// (its server was out of reach), and no other holds it: it is
			// removed, if it is still what was read, and the lease taken.
			switch {
			case e.Revision() == removing:
			case !isHolder(e.Value()):
				l.c.log.Warn("the lease key holds no coordinator's lease; removing it", "value", messages.Clip(string(e.Value())))
			case l.earlierTerm(e.Value()):
				l.c.log.Info("taking back the lease this coordinator held in its term before", "copy", l.c.copy)
			default:
				l.c.log.Warn("the lease key holds a lease written without a TTL, which no coordinator writes, and it never expires; removing it",
					"value", messages.Clip(string(e.Value())))
			}
			removing = e.Revision()
			err := l.c.kv.Delete(ctx, messages.LeaseKey, jetstream.LastRevision(e.Revision()))
			if err == nil {
				continue
			}
			if !jserr.Conflict(err) && !removeFailed {
				l.c.log.Warn("the lease key could not be removed; trying again", "err", err)
				removeFailed = true
			}
		}
		if !logged {
			who := slog.String("holder", "another coordinator")
			var h holder
			if err == nil && json.Unmarshal(e.Value(), &h) == nil {
				// Each field cut alone: the whole, cut, lost the host.
				who = slog.Group("holder", "copy", messages.Clip(h.Copy), "pid", h.PID, "host", messages.Clip(h.Host))
			}
			l.c.log.Info("standing by: another coordinator holds the lease", who, "ttl", l.ttl)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(l.ttl / 4):
		}
	}
}

// withoutTTL reports whether the lease stored at revision rev has no TTL:
// every coordinator writes its lease, and each renewal, with one, so that
// the lease of a coordinator that died expires; a lease without one, written
// by another hand, would keep every coordinator standing by for ever. It
// reports false when it cannot tell (the read failed, or the lease moved).
func (l *lease) withoutTTL(ctx context.Context, rev uint64) bool {
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	subject := messages.BucketSubject(messages.LeaseKey)
	m, err := l.c.nc.RequestWithContext(ctx, messages.DirectGetSubject(messages.SagaBucketStream, subject), nil)
	if err != nil || m.Header.Get("Status") != "" || m.Header.Get(jetstream.SequenceHeader) != strconv.FormatUint(rev, 10) {
		return false
	}
	return m.Header.Get(jetstream.MsgTTLHeader) == ""
}

// earlierTerm reports whether data, a lease, is one this coordinator took
// in an earlier term: its copy's name is this process's alone.
func (l *lease) earlierTerm(data []byte) bool {
	var h holder
	return json.Unmarshal(data, &h) == nil && h.Copy == l.c.copy && h.PID == os.Getpid() && !bytes.Equal(data, l.data)
}

// keep renews the lease every third of its TTL until ctx ends. It closes
// lost and returns when the lease was taken over, or could not be renewed
// for a whole TTL.
func (l *lease) keep(ctx context.Context, lost chan<- struct{}) {
	defer close(lost)
	renewed := time.Now()
	// tried is when the last renewal not acknowledged was sent: one that
	// landed all the same was sent then or before.
	var tried time.Time
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m := nats.NewMsg(messages.BucketSubject(messages.LeaseKey))
		m.Data = l.data
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(l.rev, 10))
		m.Header.Set(jetstream.MsgTTLHeader, l.ttl.String())
		rctx, cancel := context.WithTimeout(ctx, l.ttl/3)
		sent := time.Now()
		ack, err := l.c.js.PublishMsg(rctx, m)
		cancel()
		switch {
		case err == nil:
			l.rev, renewed = ack.Sequence, time.Now()
			l.extend(sent)
		case ctx.Err() != nil:
			return
		case jserr.Conflict(err):
			if rev, at, ok := l.landed(ctx); ok {
				// A renewal whose acknowledgement came too late was stored:
				// the lease is still this coordinator's.
				l.rev, renewed = rev, at
				if !tried.IsZero() {
					l.extend(tried)
				}
				continue
			}
			l.c.log.Error("lease taken over by another coordinator", "err", err)
			return
		case time.Since(renewed) >= l.ttl:
			l.c.log.Error("lease not renewed within its TTL", "err", err)
			return
		default:
			tried = sent
			l.c.log.Warn("lease renewal failed; retrying", "err", err)
		}
	}
}

// landed reports whether the lease, whose renewal was refused as expecting
// an older revision, holds this coordinator's own renewal: one that the
// server stored after its publish had given up waiting for the
// acknowledgement (a loaded server acknowledges the bucket's writes in
// turn, the sagas' before the lease's). It returns the revision to renew
// and when it was stored. The holder's id is this lease's alone, so the
// lease is no other coordinator's; nor has it expired, since the key is
// there.
func (l *lease) landed(ctx context.Context) (uint64, time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	e, err := l.c.kv.Get(ctx, messages.LeaseKey)
	if err != nil || !bytes.Equal(e.Value(), l.data) {
		return 0, time.Time{}, false
	}
	return e.Revision(), e.Created(), true
}

// release frees the lease so a standby takes over at once. With the
// connection down it does not wait for a server that may not come back.
func (l *lease) release() {
	if !l.c.nc.IsConnected() {
		l.c.log.Warn("lease not released: not connected to NATS; it expires after its TTL")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.c.kv.Delete(ctx, messages.LeaseKey, jetstream.LastRevision(l.rev)); err != nil {
		l.c.log.Warn("lease not released (another coordinator may hold it already); it expires after its TTL", "err", err)
	}
}
