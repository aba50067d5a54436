package cli

import (
	"net"
	"sync"
	"time"
)

// dialer dials the NATS server as nats.go's default dialer does, and keeps
// the last error, so that a connection that never came up says why
// ("connection refused", "no such host") rather than only that no server
// was available.
type dialer struct {
	d    net.Dialer
	mu   sync.Mutex
	last error
}

func newDialer() *dialer { return &dialer{d: net.Dialer{Timeout: 2 * time.Second}} }

// Dial implements nats.CustomDialer.
func (d *dialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.d.Dial(network, address)
	d.mu.Lock()
	d.last = err
	d.mu.Unlock()
	return c, err
}

// lastError returns the error of the last dial, nil when it succeeded.
func (d *dialer) lastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}
