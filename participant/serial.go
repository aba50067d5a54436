package participant

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
)

// A serial role applies its commands one at a time, in the order they were
// published (Options.Serial). Its durable consumer pins one copy at a time
// and lets it hold many commands, so that the copy does not wait for an
// acknowledgement's round trip between two commands; what keeps the order
// is here:
//
//   - The pinned copy runs its commands on one worker, lowest stream
//     sequence first (the commands of a batch in their order in it), and
//     tries a failing one again in place.
//   - A copy pinned anew (a pin id it has not seen on the command before)
//     may be taking over from a copy that died, or stalled, holding
//     commands published before the ones it now gets: those come back
//     only when their ack wait runs out. So, before it runs a command, it
//     waits until no command of the role below it is left in the stream,
//     taking in the ones that come back meanwhile. It does so for each
//     command, one at a time, until it runs one delivered to it first
//     (not a redelivery): the commands the copy before held were all
//     delivered before that one, so none is left.
//   - It forgets the state it cached, since the other copy may have
//     written it; it does so too when it meets a command another copy has
//     answered (see Agent.run, Store.Do).

// fencePoll spaces the reads of the command stream by a copy pinned anew
// that waits for the commands before its own.
const fencePoll = 100 * time.Millisecond

// pinIDHeader carries, on a message of a pinned consumer, the id of the
// pin it was delivered under.
const pinIDHeader = "Nats-Pin-Id"

// serialWork runs the commands of work, each message's together, as a
// serial copy must, until work is closed; inHand is the context the
// commands run in.
func (a *Agent) serialWork(inHand context.Context, work <-chan [][]jetstream.Msg) {
	var queue []jetstream.Msg // in hand, by stream sequence
	take := func(m jetstream.Msg) {
		seq, idx := position(m)
		i, _ := slices.BinarySearchFunc(queue, m, func(q, _ jetstream.Msg) int {
			qs, qi := position(q)
			if c := cmpUint(qs, seq); c != 0 {
				return c
			}
			return qi - idx
		})
		queue = slices.Insert(queue, i, m)
	}
	// receive takes in the commands of msgs; once work is closed, it
	// stops reading it.
	receive := func(msgs [][]jetstream.Msg, ok bool) {
		if !ok {
			work = nil
			return
		}
		for _, ms := range msgs {
			for _, m := range ms {
				take(m)
			}
		}
	}
	fenced := false
	// alone makes the next command run alone: the batch before it left
	// it unanswered.
	alone := false
	for {
		if len(queue) == 0 {
			if work == nil {
				return
			}
			ms, ok := <-work
			receive(ms, ok)
			continue
		}
		// Take in whatever else has come, so that the lowest runs first.
	more:
		for work != nil {
			select {
			case ms, ok := <-work:
				receive(ms, ok)
			default:
				break more
			}
		}
		m := queue[0]
		if pin := m.Headers().Get(pinIDHeader); pin != a.pin {
			a.pin = pin
			a.store.forgetAll()
			fenced = true
		}
		if fenced && !a.nothingBefore(inHand, m) {
			select {
			case ms, ok := <-work:
				receive(ms, ok)
			case <-time.After(fencePoll):
			case <-inHand.Done():
				return
			}
			continue
		}
		if fenced {
			// Every command below m is done. A copy pinned before held
			// only commands delivered before this copy's first: once m is
			// one of those (delivered once), none is left, and no gap can
			// open above it. Till then, one command at a time.
			if md, err := m.Metadata(); err == nil && md.NumDelivered == 1 {
				fenced = false
			}
			queue = queue[1:]
			a.traced(inHand, m)
			continue
		}
		if alone {
			alone = false
		} else if answered, ran := a.runBatch(inHand, queue); ran > 0 {
			// What the batch left unanswered runs alone, in order.
			queue = slices.DeleteFunc(queue, func(m jetstream.Msg) bool { return answered[m] })
			alone = len(answered) < ran
			continue
		}
		queue = queue[1:]
		a.traced(inHand, m)
	}
}

// runBatch runs the leading commands of queue together ([Store.runBatch]),
// acknowledges those it answered and returns them, with how many it ran.
// It runs none when fewer than two lead the queue.
func (a *Agent) runBatch(ctx context.Context, queue []jetstream.Msg) (map[jetstream.Msg]bool, int) {
	var items []*batchItem
	for _, m := range queue[:min(len(queue), a.batch)] {
		if m.Headers().Get(pinIDHeader) != a.pin {
			break // pinned anew: the fence first
		}
		cmd, step, err := a.parse(m)
		if err != nil || step.Duration != nil {
			break
		}
		items = append(items, &batchItem{cmd: &cmd, h: step.Handler, op: opName(&cmd, string(cmd.Action))})
	}
	if len(items) < 2 {
		return nil, 0
	}
	for _, it := range items {
		a.follow(it.cmd.Tick)
	}
	began := time.Now()
	ran := a.store.runBatch(ctx, items)
	if ran > 0 {
		// Counted before any of its commands counts as handled: Stats
		// read once the commands are handled must show their batch.
		a.batches.Add(1)
		a.batched.Add(int64(ran))
	}
	answered := map[jetstream.Msg]bool{}
	for i, it := range items[:ran] {
		if !it.answered {
			continue
		}
		m := queue[i]
		answered[m] = true
		if meta, err := m.Metadata(); err == nil && meta.NumDelivered > 1 {
			a.redelivered.Add(1)
		}
		if it.cmd.Action == messages.Execute {
			a.executed.Add(1)
		} else {
			a.compensated.Add(1)
		}
		a.handled.Add(1)
		a.span(ctx, m, began)
		if err := m.Ack(); err != nil {
			a.cmdLog(it.cmd).Warn("ack failed; the command may be redelivered", "err", err)
		}
	}
	if ran > 0 {
		a.log.Debug("serial batch", "ran", ran, "answered", len(answered), "took", time.Since(began))
	}
	return answered, ran
}

// nothingBefore reports whether every command of the role published
// before m has been acknowledged. The command stream is a work queue, so a
// command leaves it when acknowledged: it is enough that no command on the
// role's subjects is stored below m and above the consumer's ack floor.
// Below the floor every command is acknowledged, yet one may still be
// stored: a server killed (SIGKILL) soon after an acknowledgement may
// come back with the consumer's state, floor included, but not the
// delete; the consumer never delivers such a command again, and waiting
// for it would stop the role for good. It is skipped, and said once. An
// error reading the stream or the consumer counts as no.
func (a *Agent) nothingBefore(ctx context.Context, m jetstream.Msg) bool {
	seq := streamSeq(m)
	waiting := func(err error) bool {
		a.log.Warn("serial copy: cannot read the command stream; waiting", "err", err)
		return false
	}
	cons, err := a.js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer(a.opts.Role))
	if err != nil {
		return waiting(err)
	}
	floor := cons.CachedInfo().AckFloor.Stream
	stream, err := a.js.Stream(ctx, messages.CommandStream)
	if err != nil {
		return waiting(err)
	}
	for _, subj := range a.Subjects() {
		first, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj))
		if err == nil && first.Sequence <= floor {
			a.keptAcked(first.Sequence, floor)
			first, err = stream.GetMsg(ctx, floor+1, jetstream.WithGetMsgSubject(subj))
		}
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return waiting(err)
		case first.Sequence < seq:
			const waits = "serial copy pinned anew: waiting for the commands before its own"
			if fence := [2]uint64{first.Sequence, seq}; fence != a.fence {
				a.fence = fence
				a.log.Info(waits, "first", first.Sequence, "own", seq)
			} else {
				a.log.Debug(waits, "first", first.Sequence, "own", seq)
			}
			return false
		}
	}
	return true
}

// keptAcked says, once a process, that the command stream still stores
// an acknowledged command (at seq, at or below the consumer's ack floor).
func (a *Agent) keptAcked(seq, floor uint64) {
	if a.saidKeptAcked.CompareAndSwap(false, true) {
		a.log.Warn("the command stream still stores commands this role acknowledged (its server was killed after the acknowledgement, and lost the delete): they are not delivered again, and a serial copy does not wait for them",
			"first", seq, "ack_floor", floor)
	}
}

// streamSeq is m's sequence in the command stream; 0 when its metadata
// cannot be read.
func streamSeq(m jetstream.Msg) uint64 {
	md, err := m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// gather passes what comes on in to the channel it returns, in order,
// taking everything in at once however long the reader takes, until in is
// closed and all is passed on, or ctx ends. A receive gets everything
// gathered since the one before, as one slice: a reader that takes in
// what is waiting without blocking (a serial copy, before each batch) gets
// it all, where an item at a time would have it see only the first and
// run batches of two (BENCHMARKS.md, "A serial copy's queue, and a lease kept under load").
func gather[T any](ctx context.Context, in <-chan T) <-chan []T {
	out := make(chan []T)
	go func() {
		defer close(out)
		var buf []T
		for in != nil || len(buf) > 0 {
			var send chan<- []T
			if len(buf) > 0 {
				send = out
			}
			select {
			case m, ok := <-in:
				if !ok {
					in = nil
					continue
				}
				buf = append(buf, m)
			case send <- buf:
				buf = nil
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
