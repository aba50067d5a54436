// Package warnings says the warnings that messages from outside cause at
// most once an interval for each kind, and counts those it did not say:
// anyone allowed to publish a request could otherwise fill a process's log
// with one warning a message.
package warnings

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter says each kind of warning at most once an interval. It is safe
// for concurrent use.
type Limiter struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	next   time.Time // when the next one may be said
	unsaid int64     // how many were not said since the last one
}

// New returns a Limiter that logs to log, each kind at most once every
// interval.
func New(log *slog.Logger, interval time.Duration) *Limiter {
	return &Limiter{log: log, interval: interval, now: time.Now, kinds: map[string]*kind{}}
}

// Warn logs msg with args at warn, unless a warning of the same msg was
// said less than the interval ago: then it only counts it, and the next
// one said tells how many were not (not_said_before). msg names the kind:
// give a constant, and put what varies in args.
func (l *Limiter) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, msg, args...) }

// Log logs msg with args at level, unless one of the same kind was said
// less than the interval ago, as [Limiter.Warn] does with msg its kind,
// and reports whether it said it. Give a kind that takes few values: the
// Limiter keeps one entry a kind.
func (l *Limiter) Log(level slog.Level, kindOf, msg string, args ...any) (said bool) {
	l.mu.Lock()
	k, ok := l.kinds[kindOf]
	if !ok {
		k = &kind{}
		l.kinds[kindOf] = k
	}
	now := l.now()
	if now.Before(k.next) {
		k.unsaid++
		l.mu.Unlock()
		return false
	}
	unsaid := k.unsaid
	k.next, k.unsaid = now.Add(l.interval), 0
	l.mu.Unlock()
	if unsaid > 0 {
		args = append(args, "not_said_before", unsaid)
	}
	l.log.Log(context.Background(), level, msg, args...)
	return true
}
