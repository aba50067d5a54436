package client_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/embedded"
)

// refusedDialer reports each dial that no server answered.
type refusedDialer struct {
	d       net.Dialer
	refused chan struct{}
}

func (r *refusedDialer) Dial(network, address string) (net.Conn, error) {
	c, err := r.d.Dial(network, address)
	if err != nil {
		select {
		case r.refused <- struct{}{}:
		default:
		}
	}
	return c, err
}

// TestConnectWaitsForTheServer: a driver started before its server
// connects once the server is up, within its context.
func TestConnectWaitsForTheServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())

	dialer := &refusedDialer{refused: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		c   *client.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := client.Connect(ctx, "nats://127.0.0.1:"+strconv.Itoa(port), client.Options{}, nats.SetCustomDialer(dialer))
		done <- result{c, err}
	}()
	<-dialer.refused // no server yet: refused, and tried again
	ns, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: port, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	r := <-done
	require.NoError(t, r.err)
	r.c.Close()
}

// TestConnectGivesUpWithItsContext: with no server, Connect returns when
// its context ends, with the last attempt's error and no password.
func TestConnectGivesUpWithItsContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err = client.Connect(ctx, "nats://me:secret@127.0.0.1:"+strconv.Itoa(port), client.Options{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, nats.ErrNoServers)
	require.NotContains(t, err.Error(), "secret")
}
