package main

import (
	"fmt"
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

// TestStartsNeverAdmittedBeforeTheirTick has the driver's client start a
// tick's sagas, scheduled for the tick, beyond the coordinator's limit of
// sagas in flight: the sagas admitted wait for the tick, which the driver
// sends only once its starts are in. StartMany must say so rather than
// send the starts again for ever.
func TestStartsNeverAdmittedBeforeTheirTick(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: flood.Definitions(), MaxActive: 2})
	testenv.SubsidyAgents(t, url)
	ctx := t.Context()

	c, err := client.New(nc, client.Options{RequestTimeout: requestTimeout, RestartPatience: restartPatience, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	var starts []client.Start
	for i := range 3 {
		household := messages.Context{}.MustSet(flood.KeyHousehold, fmt.Sprintf("h-%d", i))
		starts = append(starts, client.Start{Saga: flood.Subsidy, ID: fmt.Sprintf("s-%d", i), Rank: int64(i + 1), Tick: 1, Context: household})
	}
	done := make(chan []error, 1)
	go func() {
		_, errs := c.StartMany(ctx, starts, 0)
		done <- errs
	}()
	var errs []error
	select {
	case errs = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("StartMany kept sending starts that cannot be admitted before their tick")
	}
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.ErrorIs(t, errs[2], client.ErrNeverAdmitted)
	require.ErrorIs(t, errs[2], client.ErrBusy)
	// Start alone says the same, rather than send it again until ctx ends.
	one := make(chan error, 1)
	go func() {
		_, err := c.Start(ctx, starts[2])
		one <- err
	}()
	select {
	case err = <-one:
	case <-time.After(20 * time.Second):
		t.Fatal("Start kept sending a start that cannot be admitted before its tick")
	}
	require.ErrorIs(t, err, client.ErrNeverAdmitted)
	require.ErrorIs(t, err, client.ErrBusy)
	// The two admitted run once the tick comes; then the third gets in.
	_, err = c.Advance(ctx, 1, client.Quiet{Limit: 10 * time.Second})
	require.NoError(t, err)
	testenv.WaitStatus(t, nc, "s-1", saga.Completed)
	_, errs = c.StartMany(ctx, starts[2:], 0)
	require.NoError(t, errs[0])
}
