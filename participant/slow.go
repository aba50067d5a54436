package participant

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/messages"
)

// slowHandler is how long a handler call runs before its agent says so,
// at warn; slowCheck is how often the agent looks. A handler holds its
// command for as long as it runs (the agent keeps the command from being
// delivered again meanwhile), and a serial role's commands behind it wait
// as long: without the warning a stuck handler shows only as a
// simulation tick that does not end.
var (
	slowHandler = 30 * time.Second
	slowCheck   = 5 * time.Second
)

// calls are the handler calls running, for the slow-handler watch: one
// slot a call, with the look of the watch it began at. A call costs the
// hot path a few atomic operations, no clock read and no allocation
// (BenchmarkCalls has the figures).
type calls struct {
	// after and every are slowHandler and slowCheck when the agent was
	// made; looks is after in looks of the watch, rounded up.
	after, every time.Duration
	looks        int64
	// look counts the watch's looks.
	look atomic.Int64
	next atomic.Uint64
	// slots hold the calls running: began is 0 when the slot is free,
	// else 1 + the look the call began at, negated once the watch has
	// said it runs long.
	slots []callSlot
}

type callSlot struct {
	began atomic.Int64
	cmd   atomic.Pointer[messages.Command]
}

// newCalls returns the calls of an agent that runs at most n handler
// calls at once: its workers, and as many commands held for simulation
// time.
func newCalls(n int) *calls {
	c := &calls{after: slowHandler, every: slowCheck, slots: make([]callSlot, n)}
	c.looks = int64((c.after + c.every - 1) / c.every)
	return c
}

// watched returns h with its execute and compensate counted in a.calls
// while they run.
func (a *Agent) watched(h agent.Handler) agent.Handler {
	if ex := h.Execute; ex != nil {
		h.Execute = func(ctx context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			defer a.calls.end(a, a.calls.begin(cmd))
			return ex(ctx, tx, cmd)
		}
	}
	if co := h.Compensate; co != nil {
		h.Compensate = func(ctx context.Context, tx agent.Tx, cmd *messages.Command) error {
			defer a.calls.end(a, a.calls.begin(cmd))
			return co(ctx, tx, cmd)
		}
	}
	return h
}

// begin takes a slot for a call of cmd's handler, and returns it; -1
// when every slot is taken (not watched).
func (c *calls) begin(cmd *messages.Command) int {
	n := uint64(len(c.slots))
	began := c.look.Load() + 1
	for range n {
		i := c.next.Add(1) % n
		if c.slots[i].began.CompareAndSwap(0, began) {
			c.slots[i].cmd.Store(cmd)
			return int(i)
		}
	}
	return -1
}

// end frees slot i, and says how long its call took if the watch said
// it runs long.
func (c *calls) end(a *Agent, i int) {
	if i < 0 {
		return
	}
	s := &c.slots[i]
	cmd := s.cmd.Swap(nil)
	if began := s.began.Swap(0); began < 0 {
		a.cmdLog(cmd).Info("the slow handler returned", "took_about", c.since(-began))
	}
}

// since is how long ago, to within every, look began (1 + a look).
func (c *calls) since(began int64) time.Duration {
	return time.Duration(c.look.Load()+1-began) * c.every
}

// watchCalls looks at the calls every c.every, and says, once each, those
// that run for c.after or more, until ctx ends.
func (a *Agent) watchCalls(ctx context.Context) {
	c := a.calls
	t := time.NewTicker(c.every)
	defer t.Stop()
	msg := "a handler has run long and not returned: its command stays with this copy until it does"
	if a.opts.Serial {
		msg = "a handler has run long and not returned: the role is serial, and its commands behind this one wait"
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := c.look.Add(1) + 1
		for i := range c.slots {
			s := &c.slots[i]
			began := s.began.Load()
			if began <= 0 || now-began < c.looks || !s.began.CompareAndSwap(began, -began) {
				continue
			}
			if cmd := s.cmd.Load(); cmd != nil {
				a.cmdLog(cmd).Warn(msg, "running_about", c.since(began))
			}
		}
	}
}
