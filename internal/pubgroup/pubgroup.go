// Package pubgroup sends the JetStream publishes of many goroutines
// together, each still answered on its own.
//
// A goroutine that publishes with jetstream's Publish waits for its
// acknowledgement, and nats.go writes each message to the socket as soon
// as its flusher runs: when goroutines publish one after the other, as the
// workers of an agent do (each after its own handler), every message is a
// write of its own, and the server reads each alone. A [Publisher] queues
// the publishes and sends what is queued together, then waits for their
// acknowledgements before it sends the next group: what queues meanwhile
// goes out as one. It is a group commit: one publish alone waits for its
// acknowledgement as it would have, and under load the groups grow.
//
// Measured in BENCHMARKS.md ("Value writes sent together").
package pubgroup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxGroup bounds the publishes sent together.
const MaxGroup = 256

// ErrClosed is returned by [Publisher.Publish] once the publisher is
// closed.
var ErrClosed = errors.New("pubgroup: publisher closed")

// Publisher publishes for many goroutines. Its zero value is not usable:
// make one with [New].
type Publisher struct {
	js     jetstream.JetStream
	queue  chan *pub
	closed chan struct{}
	done   chan struct{}
	// onGroup, when set (by tests), is told each group's size.
	onGroup func(n int)
}

type pub struct {
	msg  *nats.Msg
	opts []jetstream.PublishOpt
	// answer receives the acknowledgement or the error, once.
	answer chan answer
}

type answer struct {
	ack *jetstream.PubAck
	err error
}

// New returns a Publisher that publishes on nc, each acknowledgement
// awaited at most ackWait. Close it when done.
func New(nc *nats.Conn, ackWait time.Duration) (*Publisher, error) {
	p, err := newPublisher(nc, ackWait)
	if err != nil {
		return nil, err
	}
	go p.run()
	return p, nil
}

func newPublisher(nc *nats.Conn, ackWait time.Duration) (*Publisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(ackWait),
		jetstream.WithPublishAsyncMaxPending(2*MaxGroup))
	if err != nil {
		return nil, fmt.Errorf("pubgroup: %w", err)
	}
	return &Publisher{js: js, queue: make(chan *pub, MaxGroup), closed: make(chan struct{}), done: make(chan struct{})}, nil
}

// Publish publishes data on subject with opts, as jetstream's Publish
// does, and returns its acknowledgement. When ctx ends first it returns
// ctx's error; the message may then have been stored or not, as with
// jetstream's Publish.
func (p *Publisher) Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	w := &pub{msg: &nats.Msg{Subject: subject, Data: data}, opts: opts, answer: make(chan answer, 1)}
	select {
	case p.queue <- w:
	case <-p.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case a := <-w.answer:
		return a.ack, a.err
	case <-p.done:
		// Every publish taken from the queue is answered before run
		// ends: one not answered was left there.
		select {
		case a := <-w.answer:
			return a.ack, a.err
		default:
			return nil, ErrClosed
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops the publisher, once the group out is answered (each
// acknowledgement comes or times out). Publishes still waiting for their
// turn then return ErrClosed, unsent.
func (p *Publisher) Close() {
	select {
	case <-p.closed:
	default:
		close(p.closed)
	}
	<-p.done
}

func (p *Publisher) run() {
	defer close(p.done)
	group := make([]*pub, 0, MaxGroup)
	for {
		select {
		case <-p.closed:
			return
		default:
		}
		select {
		case w := <-p.queue:
			group = append(group[:0], w)
		case <-p.closed:
			return
		}
	gather:
		for len(group) < MaxGroup {
			select {
			case w := <-p.queue:
				group = append(group, w)
			default:
				break gather
			}
		}
		p.send(group)
	}
}

// send publishes group's messages back to back, so that they reach the
// socket together, then answers each with its acknowledgement.
func (p *Publisher) send(group []*pub) {
	if p.onGroup != nil {
		p.onGroup(len(group))
	}
	futures := make([]jetstream.PubAckFuture, len(group))
	for i, w := range group {
		f, err := p.js.PublishMsgAsync(w.msg, w.opts...)
		if err != nil {
			w.answer <- answer{err: err}
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			group[i].answer <- answer{ack: ack}
		case err := <-f.Err():
			group[i].answer <- answer{err: err}
		}
	}
}
