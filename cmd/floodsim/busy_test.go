package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestStartBacksOffWhileBusy has the driver's client (client.Client, as
// floodsim makes it) start a saga while the coordinator holds its limit of
// one saga in flight: the client is answered busy, backs off and starts it
// once the first saga is done.
func TestStartBacksOffWhileBusy(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: flood.Definitions(), MaxActive: 1})
	ctx := t.Context()

	c, err := client.New(nc, client.Options{RequestTimeout: requestTimeout, RestartPatience: restartPatience, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	household := messages.Context{}.MustSet(flood.KeyHousehold, "h-1")
	_, err = c.Start(ctx, client.Start{Saga: flood.Subsidy, ID: "first", Context: household})
	require.NoError(t, err)
	second := make(chan error, 1)
	go func() {
		_, err := c.Start(ctx, client.Start{Saga: flood.Subsidy, ID: "second", Context: household})
		second <- err
	}()
	// The second start is refused while the first is in flight: it is
	// not held by the coordinator.
	require.Never(t, func() bool {
		_, err := c.Status(ctx, "second")
		return err == nil
	}, 300*time.Millisecond, 20*time.Millisecond)

	testenv.SubsidyAgents(t, url)
	select {
	case err := <-second:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the second start never got through")
	}
	testenv.WaitStatus(t, nc, "second", saga.Completed)
}
