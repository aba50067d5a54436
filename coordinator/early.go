package coordinator

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
)

// earlyDelay is how long an answer that came before its time (see
// saga.ErrEarly) first waits before JetStream offers it again; the wait
// doubles with each delivery, up to maxEarlyDelay.
const (
	earlyDelay    = 20 * time.Millisecond
	maxEarlyDelay = 640 * time.Millisecond
)

// earlyStale is how long a held early answer may go unseen before a copy
// of it takes its place: it is offered again within maxEarlyDelay, unless
// it is gone (a stream purged by hand).
const earlyStale = 10 * maxEarlyDelay

// heldEarly is the reply, of the reply stream, held back for a saga's
// command in flight because it came before its time.
type heldEarly struct {
	// answers names the command it answers.
	answers earlyCommand
	// stream is its sequence in the reply stream, seen when it was last
	// offered.
	stream uint64
	seen   time.Time
}

// earlyCommand names a command by what its reply echoes of it.
type earlyCommand struct {
	step    string
	action  messages.Action
	attempt int
	seq     int
}

// holdEarly puts m, a reply r that came before its time, back, to be
// offered again: after earlyDelay, doubled at each delivery up to
// maxEarlyDelay. The reply stream's consumer, which every role's replies
// share, holds at most one early reply a command: a copy of one held
// already (another message with the same saga, step, action, attempt and
// seq) is dropped, so that copies cannot fill the acknowledgements it
// keeps pending and stall every other role's replies. An answer of the
// role's is decided once, by its barrier: its copies say nothing more.
func (c *Coordinator) holdEarly(m jetstream.Msg, r *messages.Reply, now time.Time) func(error) {
	meta, err := m.Metadata()
	if err != nil {
		return func(error) { _ = m.NakWithDelay(earlyDelay) }
	}
	h := heldEarly{answers: earlyCommand{r.Step, r.Action, r.Attempt, r.Seq}, stream: meta.Sequence.Stream, seen: now}
	if held, ok := c.earlyReplies[r.SagaID]; ok && held.answers == h.answers && held.stream != h.stream && now.Sub(held.seen) < earlyStale {
		c.log.Debug("copy of an early reply held already: dropped", "saga_id", r.SagaID, "step", r.Step, "seq", r.Seq)
		return func(error) { _ = m.Term() }
	}
	c.earlyReplies[r.SagaID] = h
	delay := earlyDelayAt(meta.NumDelivered)
	return func(error) { _ = m.NakWithDelay(delay) }
}

// earlyWait is how long m, an answer that came before its time, waits
// before it is offered again (earlyDelayAt).
func earlyWait(m jetstream.Msg) time.Duration {
	meta, err := m.Metadata()
	if err != nil {
		return earlyDelay
	}
	return earlyDelayAt(meta.NumDelivered)
}

// earlyDelayAt is the wait of an early answer delivered the delivered-th
// time: earlyDelay, doubled at each delivery, up to maxEarlyDelay.
func earlyDelayAt(delivered uint64) time.Duration {
	return min(earlyDelay<<min(max(delivered, 1)-1, 5), maxEarlyDelay)
}

// settleEarly forgets the early reply held for saga id when m is it,
// offered again: it is decided anew (and held again if still early).
func (c *Coordinator) settleEarly(m jetstream.Msg, id string) {
	held, ok := c.earlyReplies[id]
	if !ok {
		return
	}
	if meta, err := m.Metadata(); err == nil && meta.Sequence.Stream == held.stream {
		delete(c.earlyReplies, id)
	}
}
