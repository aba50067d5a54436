package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// The trip saga books a flight, then a hotel, then charges a card. Each
// step is served by an agent of its own role.
const trip = "trip"

func tripSaga() saga.Definition {
	return saga.Definition{
		Name: "trip_booking", Subject: trip,
		Steps: []saga.Step{
			{Name: "reserve_flight", Role: "airline", Compensation: "cancel_flight"},
			{Name: "reserve_hotel", Role: "hotel", Compensation: "cancel_hotel"},
			{Name: "charge_card", Role: "bank", Compensation: "refund_card"},
		},
	}
}

// Context keys the trip agents understand.
const (
	keyDecline    = "decline"     // a step name: that step rejects
	keyHotelTicks = "hotel_ticks" // the hotel answers "working" and takes this many ticks
	keyHotelMute  = "hotel_mute"  // the hotel never answers the execute
)

// booking is the trip agents' handler: the execute marks the saga's booking
// "booked" in the role's state and outputs a reference; the compensation
// marks it "cancelled". A step named by the context's "decline" rejects.
func booking(step string, before func(*messages.Command)) agent.Handler {
	set := func(tx agent.Tx, cmd *messages.Command, v string) error {
		var old string
		if _, err := tx.Get("booking."+cmd.SagaID, &old); err != nil {
			return err
		}
		return tx.Put("booking."+cmd.SagaID, v)
	}
	return agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			if before != nil {
				before(cmd)
			}
			if d, _ := cmd.Context.String(keyDecline); d == step {
				return nil, agent.Reject("%s declined", step)
			}
			if err := set(tx, cmd, "booked"); err != nil {
				return nil, err
			}
			return messages.Context{}.MustSet(step+"_ref", step+"-"+cmd.SagaID[:8]), nil
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			return set(tx, cmd, "cancelled")
		},
	}
}

// tripEnv is a server, a coordinator, the three trip agents, a client and
// the recorders of the command and event subjects.
type tripEnv struct {
	nc       *nats.Conn
	commands *wire
	events   *wire
	// stores records the coordinator's writes of sagas to the bucket.
	stores *wire
	agents map[string]*participant.Agent
	coord  *coordinator.Coordinator
	// muted receives the saga id of every execute the hotel keeps silent.
	muted chan string
}

func newTripEnv(t *testing.T) *tripEnv {
	t.Helper()
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	env := &tripEnv{
		nc:       nc,
		commands: listen(t, nc, "saga.>"),
		events:   listen(t, nc, "natsaga.event.>"),
		stores:   listenStores(t, nc),
		agents:   map[string]*participant.Agent{},
		muted:    make(chan string, 8),
	}
	env.coord = testenv.Coordinator(t, url, []saga.Definition{tripSaga()})
	release := make(chan struct{})
	mute := func(cmd *messages.Command) {
		if ok := cmd.Context.Get(keyHotelMute, new(bool)) == nil; ok {
			env.muted <- cmd.SagaID
			<-release
		}
	}
	for _, s := range tripSaga().Steps {
		var before func(*messages.Command)
		var duration func(*messages.Command) int64
		if s.Role == "hotel" {
			before = mute
			duration = func(cmd *messages.Command) int64 {
				d, _ := cmd.Context.Int64(keyHotelTicks)
				return d
			}
		}
		env.agents[s.Role] = testenv.Agent(t, url, participant.Options{
			Role: s.Role, AckWait: time.Minute,
			Steps: []agent.Step{{Saga: trip, Name: s.Name, Handler: booking(s.Name, before), Duration: duration}},
		})
	}
	// Cleanups run last first: the muted handler returns before its agent
	// is stopped.
	t.Cleanup(func() { close(release) })
	return env
}

// wait waits until the saga is terminal and every command it caused has
// arrived, and checks that the recorder saw every command the command
// stream stored, and no other.
func (env *tripEnv) wait(t *testing.T, id string, status saga.Status, commands, events int) saga.Execution {
	t.Helper()
	x := testenv.WaitStatus(t, env.nc, id, status)
	require.Eventually(t, func() bool {
		return len(env.commands.commands(t, id)) >= commands && len(env.events.events(t, id)) >= events
	}, 10*time.Second, 5*time.Millisecond)
	js, err := jetstream.New(env.nc)
	require.NoError(t, err)
	st, err := js.Stream(context.Background(), messages.CommandStream)
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	require.Equal(t, uint64(env.commands.len()), info.State.LastSeq, "commands on the wire and in the stream differ")
	return x
}

// booking returns role's booking state for saga id ("" when none).
func (env *tripEnv) booking(t *testing.T, role, id string) string {
	t.Helper()
	var v string
	_, err := env.agents[role].Store().Get(context.Background(), "booking."+id, &v)
	require.NoError(t, err)
	return v
}

func execute(step string, seq int, tick int64) sent {
	return sent{Subject: messages.ExecuteSubject(trip, step), Action: messages.Execute, Attempt: 1, Seq: seq, Tick: tick}
}

func compensate(step string, seq int, tick int64) sent {
	return sent{Subject: messages.CompensateSubject(trip, step), Action: messages.Compensate, Attempt: 1, Seq: seq, Tick: tick}
}

func TestWireHappyPath(t *testing.T) {
	env := newTripEnv(t)
	id := testenv.Start(t, env.nc, trip, messages.Context{}.MustSet("traveller", "ada"))
	x := env.wait(t, id, saga.Completed, 3, 2)

	require.Equal(t, []sent{
		execute("reserve_flight", 1, 0),
		execute("reserve_hotel", 2, 0),
		execute("charge_card", 3, 0),
	}, env.commands.commands(t, id))
	require.Equal(t, []string{"in_progress", "completed"}, env.events.events(t, id))
	// The saga is stored when it starts and when it ends: a step answered
	// ok that only leads to the next one is replayed from the agents'
	// records after a restart, not stored.
	require.Eventually(t, func() bool { return env.stores.states(t, id) == "in_progress completed" },
		10*time.Second, 5*time.Millisecond, "stored states: %s", env.stores.states(t, id))

	require.Equal(t, []string{"reserve_flight", "reserve_hotel", "charge_card"}, x.Completed)
	require.Empty(t, x.Compensated)
	require.Empty(t, x.Error)
	for _, step := range x.Completed {
		ref, err := x.Context.String(step + "_ref")
		require.NoError(t, err)
		require.Equal(t, step+"-"+id[:8], ref)
		require.Equal(t, ref, mustString(t, x.Results[step], step+"_ref"))
	}
	require.Equal(t, []saga.Transition{
		{Tick: 0, Status: saga.Pending},
		{Tick: 0, Status: saga.InProgress},
		{Tick: 0, Status: saga.InProgress, Step: "reserve_flight", Action: messages.Execute, Attempt: 1},
		{Tick: 0, Status: saga.InProgress, Step: "reserve_hotel", Action: messages.Execute, Attempt: 1},
		{Tick: 0, Status: saga.InProgress, Step: "charge_card", Action: messages.Execute, Attempt: 1},
		{Tick: 0, Status: saga.Completed},
	}, x.History)
	for _, role := range []string{"airline", "hotel", "bank"} {
		require.Equal(t, "booked", env.booking(t, role, id), role)
	}
}

func TestWireBusinessFailureCompensatesInReverse(t *testing.T) {
	env := newTripEnv(t)
	// Tick first, so that the history shows the tick the saga ran at.
	testenv.Tick(t, env.nc, 4)
	id := testenv.Start(t, env.nc, trip, messages.Context{}.MustSet(keyDecline, "charge_card"))
	x := env.wait(t, id, saga.RolledBack, 5, 3)

	require.Equal(t, []sent{
		execute("reserve_flight", 1, 4),
		execute("reserve_hotel", 2, 4),
		execute("charge_card", 3, 4),
		compensate("reserve_hotel", 4, 4),
		compensate("reserve_flight", 5, 4),
	}, env.commands.commands(t, id))
	require.Equal(t, []string{"in_progress", "compensating", "rolled_back"}, env.events.events(t, id))

	const reason = "step charge_card failed: charge_card declined"
	require.Equal(t, reason, x.Error)
	require.Equal(t, saga.RolledBack, x.Cause)
	require.Equal(t, []string{"reserve_flight", "reserve_hotel"}, x.Completed)
	require.Equal(t, []string{"reserve_hotel", "reserve_flight"}, x.Compensated)
	require.Equal(t, []saga.Transition{
		{Tick: 4, Status: saga.Pending},
		{Tick: 4, Status: saga.InProgress},
		{Tick: 4, Status: saga.InProgress, Step: "reserve_flight", Action: messages.Execute, Attempt: 1},
		{Tick: 4, Status: saga.InProgress, Step: "reserve_hotel", Action: messages.Execute, Attempt: 1},
		{Tick: 4, Status: saga.InProgress, Step: "charge_card", Action: messages.Execute, Attempt: 1},
		{Tick: 4, Status: saga.Compensating, Note: reason},
		{Tick: 4, Status: saga.Compensating, Step: "reserve_hotel", Action: messages.Compensate, Attempt: 1},
		{Tick: 4, Status: saga.Compensating, Step: "reserve_flight", Action: messages.Compensate, Attempt: 1},
		{Tick: 4, Status: saga.RolledBack, Note: reason},
	}, x.History)

	require.Equal(t, "cancelled", env.booking(t, "airline", id))
	require.Equal(t, "cancelled", env.booking(t, "hotel", id))
	require.Equal(t, "", env.booking(t, "bank", id), "the declined charge left no trace")
	rec, _, err := env.agents["bank"].Store().Branch(context.Background(), id, "charge_card")
	require.NoError(t, err)
	require.Equal(t, messages.Failed, rec.Execute.Outcome)
	require.Nil(t, rec.Compensate, "the failed step itself is not compensated")
}

func TestWireTickTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  messages.Context
	}{
		{"working", messages.Context{}.MustSet(keyHotelTicks, 100)},
		{"silent", messages.Context{}.MustSet(keyHotelMute, true)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTripEnv(t)
			id := testenv.Start(t, env.nc, trip, tc.ctx)
			working := tc.name == "working"
			if working {
				// The hotel answered "working": nobody awaits an answer.
				require.Eventually(t, func() bool {
					x := testenv.Status(t, env.nc, id)
					return x.Current == 1 && !x.Awaiting
				}, 10*time.Second, 5*time.Millisecond)
			} else {
				require.Equal(t, id, <-env.muted)
			}

			// The hotel step was sent at tick 0 with a timeout of 1 tick:
			// it is still in time at tick 1 and late at tick 2.
			require.Empty(t, testenv.Tick(t, env.nc, 1).Expired)
			require.Equal(t, saga.InProgress, testenv.Status(t, env.nc, id).Status)
			ack := testenv.Tick(t, env.nc, 2)
			require.Equal(t, []string{id}, ack.Expired)
			require.Equal(t, 1, ack.ExpiredCount)
			x := env.wait(t, id, saga.TimedOut, 4, 3)

			require.Equal(t, []sent{
				execute("reserve_flight", 1, 0),
				execute("reserve_hotel", 2, 0),
				compensate("reserve_hotel", 3, 2),
				compensate("reserve_flight", 4, 2),
			}, env.commands.commands(t, id))
			require.Equal(t, []string{"in_progress", "compensating", "timed_out"}, env.events.events(t, id))

			const reason = "step reserve_hotel not answered within 1 tick"
			require.Equal(t, reason, x.Error)
			require.Equal(t, saga.TimedOut, x.Cause)
			require.Equal(t, []string{"reserve_flight"}, x.Completed)
			require.Equal(t, []string{"reserve_hotel", "reserve_flight"}, x.Compensated)
			want := []saga.Transition{
				{Tick: 0, Status: saga.Pending},
				{Tick: 0, Status: saga.InProgress},
				{Tick: 0, Status: saga.InProgress, Step: "reserve_flight", Action: messages.Execute, Attempt: 1},
				{Tick: 0, Status: saga.InProgress, Step: "reserve_hotel", Action: messages.Execute, Attempt: 1},
			}
			if working {
				want = append(want, saga.Transition{Tick: 0, Status: saga.InProgress, Step: "reserve_hotel", Action: messages.Execute, Attempt: 1, Note: "working until tick 100"})
			}
			want = append(want,
				saga.Transition{Tick: 2, Status: saga.Compensating, Note: reason},
				saga.Transition{Tick: 2, Status: saga.Compensating, Step: "reserve_hotel", Action: messages.Compensate, Attempt: 1},
				saga.Transition{Tick: 2, Status: saga.Compensating, Step: "reserve_flight", Action: messages.Compensate, Attempt: 1},
				saga.Transition{Tick: 2, Status: saga.TimedOut, Note: reason},
			)
			require.Equal(t, want, x.History)

			// The hotel's execute never took effect: its compensation found
			// nothing to undo, and the barrier recorded that.
			rec, _, err := env.agents["hotel"].Store().Branch(context.Background(), id, "reserve_hotel")
			require.NoError(t, err)
			require.Nil(t, rec.Execute)
			require.NotNil(t, rec.Compensate)
			require.True(t, rec.Compensate.Noop)
			require.Equal(t, "", env.booking(t, "hotel", id))
			require.Equal(t, "cancelled", env.booking(t, "airline", id))
		})
	}
}

func mustString(t *testing.T, c messages.Context, key string) string {
	t.Helper()
	s, err := c.String(key)
	require.NoError(t, err)
	return s
}
