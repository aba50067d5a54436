package participant

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// Command batches (wire version 2, messages/batch.go). The agent's consumer
// says, in its metadata, that the agent reads them; the coordinator then
// may send the commands of one step of many sagas as one message. The
// agent takes such a message apart into one [batchedCommand] per command,
// each a jetstream.Msg of its own, so that everything after the pull (the
// workers, a serial copy's order, the barrier, held commands) treats it as
// a command that came alone: each is checked, decided by the barrier and
// answered on its own, and one's rejection is nothing to its neighbours.
//
// A command that came alone is taken the same way, as a batch of one.
//
// What is shared is the acknowledgement: the message is acknowledged once
// every command of it is settled. Should one of them ask to be delivered
// again (a transient failure), the whole message is, once all are
// settled, with the longest delay asked; the barrier answers the others
// from their records.

// expand hands each command of m to each, as a [batchedCommand]: one when
// m holds one command, each of its commands when it holds a batch. Until
// it is settled, m is in hand: kept from being delivered again
// ([Agent.keepInHand]). A batch whose envelope is malformed, or whose
// header miscounts its commands, is dropped (terminated), logged and
// counted.
func (a *Agent) expand(m jetstream.Msg, each func(jetstream.Msg)) {
	a.messages.Add(1)
	raws := [][]byte{m.Data()}
	if count := m.Headers().Get(messages.BatchHeader); count != "" {
		var err error
		if raws, err = wirejson.SplitCommandBatch(m.Data()); err == nil && count != strconv.Itoa(len(raws)) {
			err = fmt.Errorf("header %s is %q, the batch holds %d commands", messages.BatchHeader, messages.Clip(count), len(raws))
		}
		if err != nil {
			a.rejected.Add(1)
			a.log.Error("dropping malformed command batch", "subject", m.Subject(), "err", err)
			_ = m.Term()
			return
		}
	}
	b := &wireBatch{msg: m, size: len(raws), left: len(raws), settled: a.dropInHand}
	a.mu.Lock()
	a.inHand[b] = struct{}{}
	a.mu.Unlock()
	for i, raw := range raws {
		each(&batchedCommand{Msg: m, data: raw, index: i, batch: b})
	}
}

// maxSaidDrops is how many dropped commands of one message are said at
// error: a forged batch may hold hundreds, each a line otherwise. The
// rest are said at debug; every one is counted (rejected).
const maxSaidDrops = 10

// dropLevel is the level to say the next dropped command of m at: error
// for the first maxSaidDrops of its message, debug after, saying once,
// at warn, that the rest of the message's go there.
func (a *Agent) dropLevel(m jetstream.Msg) slog.Level {
	c, ok := m.(*batchedCommand)
	if !ok {
		return slog.LevelError
	}
	switch n := c.batch.dropped.Add(1); {
	case n <= maxSaidDrops:
		return slog.LevelError
	case n == maxSaidDrops+1:
		a.log.Warn("more commands of one message dropped: said at debug from here, each counted as rejected", "subject", m.Subject(), "said", maxSaidDrops)
	}
	return slog.LevelDebug
}

// dropInHand forgets b once it is settled.
func (a *Agent) dropInHand(b *wireBatch) {
	a.mu.Lock()
	delete(a.inHand, b)
	a.mu.Unlock()
}

// keepInHand extends the ack wait of every message in hand: a command
// waiting behind thousands of others for a worker, or held for simulation
// time, is not delivered to another copy meanwhile. Every message is in
// hand from the moment it arrives: a serial copy takes in all it pulls,
// and a copy of another role fetches only when its queue has room
// (intake.go).
func (a *Agent) keepInHand() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for b := range a.inHand {
		_ = b.msg.InProgress()
	}
}

// inHandCommands bounds the commands taken in and not yet begun.
const inHandCommands = 4 * messages.MaxBatch

// wireBatch is a message of commands being settled one by one.
type wireBatch struct {
	msg jetstream.Msg
	// size is how many commands the message holds.
	size int
	mu   sync.Mutex
	// left is how many commands are not settled yet; again, whether one
	// asked to be delivered again, and delay the longest delay asked.
	left  int
	again bool
	delay time.Duration
	// kept counts the commands settled other than terminated: a message
	// whose every command was terminated is terminated, as one alone is.
	kept int
	// settled is told when the message is settled.
	settled func(*wireBatch)
	// dropped counts its commands dropped as malformed ([Agent.dropLevel]).
	dropped atomic.Int32
}

// settle settles one command of b, and the message with the last:
// delivered again if one asked, terminated if all were, acknowledged
// otherwise.
func (b *wireBatch) settle(s settlement, delay time.Duration) error {
	b.mu.Lock()
	b.left--
	b.again = b.again || s == again
	if s != terminated {
		b.kept++
	}
	b.delay = max(b.delay, delay)
	last, redeliver, d, kept := b.left == 0, b.again, b.delay, b.kept
	b.mu.Unlock()
	if !last {
		return nil
	}
	b.settled(b)
	switch {
	case redeliver:
		return b.msg.NakWithDelay(d)
	case kept == 0:
		return b.msg.Term()
	default:
		return b.msg.Ack()
	}
}

// settlement is how one command of a message was settled.
type settlement int

const (
	done settlement = iota
	again
	terminated
)

// batchedCommand is one command of a message: the message, but for its
// data and its acknowledgement. Holding it longer (InProgress) holds the
// message.
type batchedCommand struct {
	jetstream.Msg
	data    []byte
	index   int
	batch   *wireBatch
	settled sync.Once
}

func (c *batchedCommand) Data() []byte { return c.data }

func (c *batchedCommand) settle(s settlement, delay time.Duration) (err error) {
	c.settled.Do(func() { err = c.batch.settle(s, delay) })
	return err
}

// Ack settles the command as done.
func (c *batchedCommand) Ack() error { return c.settle(done, 0) }

// DoubleAck is Ack: the message's own acknowledgement waits for the rest.
func (c *batchedCommand) DoubleAck(context.Context) error { return c.Ack() }

// Nak asks for the command, and so its message, to be delivered again.
func (c *batchedCommand) Nak() error { return c.settle(again, 0) }

// NakWithDelay is Nak after delay.
func (c *batchedCommand) NakWithDelay(delay time.Duration) error { return c.settle(again, delay) }

// Term settles the command as never to be delivered again.
func (c *batchedCommand) Term() error { return c.settle(terminated, 0) }

// TermWithReason is Term.
func (c *batchedCommand) TermWithReason(string) error { return c.Term() }

// sharesItsMessage reports whether m is a command of a message that
// holds others.
func sharesItsMessage(m jetstream.Msg) bool {
	c, ok := m.(*batchedCommand)
	return ok && c.batch.size > 1
}

// position orders the commands a serial copy holds: by stream sequence,
// then by place in their batch.
func position(m jetstream.Msg) (uint64, int) {
	if c, ok := m.(*batchedCommand); ok {
		return streamSeq(m), c.index
	}
	return streamSeq(m), 0
}
