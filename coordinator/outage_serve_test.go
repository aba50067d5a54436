package coordinator_test

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestEveryRequestAnsweredAfterAnOutage ends a coordinator's term while
// its server is down, and asks it many requests once the server is back
// and a new term serves. The old term's endpoints were drained while the
// connection was away; a client that subscribed them again on
// reconnecting (nats.go before v1.56.0) left the server a second member
// of each endpoint's queue group that nobody reads, and it took about
// every other request: the compose demo's driver then gave up on one.
func TestEveryRequestAnsweredAfterAnOutage(t *testing.T) {
	dir := t.TempDir()
	ns, err := embedded.Start(embedded.Options{StoreDir: dir})
	require.NoError(t, err)
	port := ns.Addr().(*net.TCPAddr).Port
	url := ns.ClientURL()
	var restarted *server.Server
	t.Cleanup(func() {
		if restarted != nil {
			restarted.Shutdown()
		}
	})

	ended := make(chan struct{}, 1)
	co := testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps},
		LeaseTTL: time.Second, Logger: slog.New(signalHandler{msg: "coordinator term ended", ch: ended})})

	ns.Shutdown()
	ns.WaitForShutdown()
	receive(t, ended, "the term to end while the server is down")
	// Its health says why the term ended, also once set-ups have failed
	// while the server is away.
	require.Eventually(t, func() bool {
		return strings.Contains(fmt.Sprint(co.Health()), "; the last set-up failed: ")
	}, 30*time.Second, 50*time.Millisecond, "no set-up failed while the server was down")
	require.Regexp(t, `^coordinator not ready: setting up streams and bucket again, after a term that ended: .+; the last set-up failed: `, co.Health().Error())
	restarted, err = embedded.Start(embedded.Options{StoreDir: dir, Port: port})
	require.NoError(t, err)

	nc := testenv.Connect(t, url)
	ask := func() error {
		_, err := nc.Request(messages.SummarySubject, nil, 500*time.Millisecond)
		return err
	}
	require.Eventually(t, func() bool { return ask() == nil }, 30*time.Second, 50*time.Millisecond, "a new term serves")
	for i := range 40 {
		require.NoError(t, ask(), "request %d after the outage", i)
	}
}
