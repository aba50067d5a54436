package pubgroup

import (
	"time"

	"github.com/nats-io/nats.go"
)

// NewHeld returns a Publisher that sends nothing until start is called,
// and tells onGroup the size of each group it sends.
func NewHeld(nc *nats.Conn, ackWait time.Duration, onGroup func(n int)) (p *Publisher, start func(), err error) {
	p, err = newPublisher(nc, ackWait)
	if err != nil {
		return nil, nil, err
	}
	p.onGroup = onGroup
	return p, func() { go p.run() }, nil
}

// Queued is how many publishes wait for their turn.
func (p *Publisher) Queued() int { return len(p.queue) }

// CloseThenStart closes a held Publisher, then starts it, and waits until
// it has stopped.
func (p *Publisher) CloseThenStart(start func()) {
	close(p.closed)
	start()
	<-p.done
}
