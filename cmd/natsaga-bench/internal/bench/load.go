// Package bench holds the parts of natsaga's benchmark command
// (cmd/natsaga-bench) that know nothing of what they measure: a closed-loop
// load generator that keeps a number of sagas in flight over NATS, latency
// percentiles, and the CPU time of processes read from /proc.
package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Target tells the load generator how to start a saga on the system under
// test and how to recognise that saga's end.
type Target struct {
	// StartSubject is where start requests are sent.
	StartSubject string
	// StartData returns the payload of the n-th start request.
	StartData func(n int) []byte
	// Started parses a start response into the saga's id. It returns an
	// error when the start was refused.
	Started func(data []byte) (string, error)
	// EventSubjects are subscribed to for the sagas' terminal events.
	EventSubjects []string
	// Finished parses an event on one of EventSubjects into the id of the
	// saga that ended, and whether it ended as the benchmark expects
	// (completed). It returns "" for an event to ignore.
	Finished func(data []byte) (id string, ok bool)
}

// LoadOptions configures [Run].
type LoadOptions struct {
	// InFlight is the number of sagas kept in flight: each of InFlight
	// loops starts a saga, waits for its end, and starts the next.
	InFlight int
	// Warmup is how long the load runs before the measurement starts.
	Warmup time.Duration
	// Duration is the measurement window.
	Duration time.Duration
	// Timeout bounds one saga, from its start request to its end.
	Timeout time.Duration
	// OnWindow, when set, is called when the measurement window opens
	// (true) and when it closes (false), to sample resource use.
	OnWindow func(open bool)
}

// Validate returns an error when o is unusable.
func (o *LoadOptions) Validate() error {
	if o.InFlight < 1 || o.Duration <= 0 || o.Warmup < 0 || o.Timeout <= 0 {
		return fmt.Errorf("load options: in flight %d, duration %s, warmup %s, timeout %s: need a positive in flight, duration and timeout",
			o.InFlight, o.Duration, o.Warmup, o.Timeout)
	}
	return nil
}

// LoadResult is what one [Run] measured: the sagas that finished within the
// measurement window.
type LoadResult struct {
	// Window is the measurement window's actual length.
	Window time.Duration
	// Completed counts sagas that completed within the window.
	Completed int
	// NotCompleted counts sagas that ended in the window other than
	// completed (rolled back, timed out, failed).
	NotCompleted int
	// Errors counts starts refused or sagas that did not end within the
	// timeout, over the whole run.
	Errors int
	// FirstError is the first of them.
	FirstError error
	// Latencies are the start-to-end times of the sagas of Completed,
	// sorted.
	Latencies []time.Duration
}

// PerSecond is the number of sagas completed per second of window.
func (r *LoadResult) PerSecond() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Completed) / r.Window.Seconds()
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of the latencies,
// 0 when there are none.
func (r *LoadResult) Percentile(p float64) time.Duration {
	return Percentile(r.Latencies, p)
}

// Percentile returns the p-th percentile (0 < p ≤ 100, nearest rank) of
// sorted, 0 when it is empty.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// waiters maps saga ids to the loops waiting for their end. An end that
// arrives before its start response is kept until the loop asks for it.
type waiters struct {
	mu    sync.Mutex
	wait  map[string]chan bool
	early map[string]bool
}

// expect returns a channel that receives whether saga id completed.
func (w *waiters) expect(id string) chan bool {
	ch := make(chan bool, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok, found := w.early[id]; found {
		delete(w.early, id)
		ch <- ok
		return ch
	}
	w.wait[id] = ch
	return ch
}

func (w *waiters) cancel(id string) {
	w.mu.Lock()
	delete(w.wait, id)
	w.mu.Unlock()
}

func (w *waiters) finished(id string, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, found := w.wait[id]; found {
		delete(w.wait, id)
		ch <- ok
		return
	}
	w.early[id] = ok
}

// Run drives the target on nc with a closed loop of opts.InFlight sagas for
// opts.Warmup plus opts.Duration, and returns what finished within the
// measurement window. It returns an error when it cannot subscribe, when
// opts are invalid, or when ctx ends first.
func Run(ctx context.Context, nc *nats.Conn, t Target, opts LoadOptions) (LoadResult, error) {
	if err := opts.Validate(); err != nil {
		return LoadResult{}, err
	}
	w := &waiters{wait: map[string]chan bool{}, early: map[string]bool{}}
	for _, subj := range t.EventSubjects {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			if id, ok := t.Finished(m.Data); id != "" {
				w.finished(id, ok)
			}
		})
		if err != nil {
			return LoadResult{}, fmt.Errorf("load: subscribe %s: %w", subj, err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		defer sub.Unsubscribe()
	}
	if err := nc.Flush(); err != nil {
		return LoadResult{}, fmt.Errorf("load: %w", err)
	}

	var (
		n        atomic.Int64
		winStart atomic.Int64 // unix nanos; 0 until the window opens
		winEnd   atomic.Int64
		mu       sync.Mutex
		res      LoadResult
	)
	record := func(began, ended time.Time, ok bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.Errors++
			if res.FirstError == nil {
				res.FirstError = err
			}
			return
		}
		ws, we := winStart.Load(), winEnd.Load()
		if ws == 0 || ended.UnixNano() < ws || (we != 0 && ended.UnixNano() > we) {
			return
		}
		if ok {
			res.Completed++
			res.Latencies = append(res.Latencies, ended.Sub(began))
		} else {
			res.NotCompleted++
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range opts.InFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				began := time.Now()
				ok, err := oneSaga(ctx, nc, t, w, int(n.Add(1)), opts.Timeout)
				record(began, time.Now(), ok, err)
				if err != nil && ctx.Err() != nil {
					return
				}
			}
		}()
	}

	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case <-time.After(opts.Warmup):
	}
	if err == nil {
		opened := time.Now()
		if opts.OnWindow != nil {
			opts.OnWindow(true)
		}
		winStart.Store(opened.UnixNano())
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(opts.Duration):
		}
		closed := time.Now()
		winEnd.Store(closed.UnixNano())
		if opts.OnWindow != nil {
			opts.OnWindow(false)
		}
		mu.Lock()
		res.Window = closed.Sub(opened)
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return res, fmt.Errorf("load: %w", err)
	}
	slices.Sort(res.Latencies)
	return res, nil
}

// errTimeout is a saga that did not end within the timeout.
var errTimeout = errors.New("saga did not end in time")

// oneSaga starts the n-th saga and waits for its end.
func oneSaga(ctx context.Context, nc *nats.Conn, t Target, w *waiters, n int, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := nc.RequestWithContext(ctx, t.StartSubject, t.StartData(n))
	if err != nil {
		return false, fmt.Errorf("start: %w", err)
	}
	id, err := t.Started(resp.Data)
	if err != nil {
		return false, fmt.Errorf("start: %w", err)
	}
	ch := w.expect(id)
	select {
	case ok := <-ch:
		return ok, nil
	case <-ctx.Done():
		w.cancel(id)
		return false, fmt.Errorf("saga %s: %w", id, errTimeout)
	}
}
