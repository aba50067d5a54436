package outage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// outage is how long the server stays down.
const outage = 10 * time.Second

// TestServerOutage runs the coordinator and the four agents as processes,
// stops the server for ten seconds with sagas in flight, and starts it
// again on the same port and store: no process exits, each logs its
// reconnect attempts, and the sagas in flight and those started after all
// finish with the invariants holding.
func TestServerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every program and waits out a 10 s outage")
	}
	bins, err := procs.Build(context.Background(), filepath.Join(t.TempDir(), "bin"), false, procs.Programs...)
	require.NoError(t, err)
	store := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	boot := func() *server.Server {
		ns, err := embedded.Start(embedded.Options{Port: port, StoreDir: store})
		require.NoError(t, err)
		return ns
	}
	ns := boot()
	t.Cleanup(func() { ns.Shutdown() })
	url := ns.ClientURL()

	var out testenv.SyncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(out.String())
		}
	})
	var running []*procs.Proc
	for _, name := range procs.Programs {
		p, err := procs.Start(name, bins[name], []string{"-log-level", "info"}, []string{"NATS_URL=" + url}, &out)
		require.NoError(t, err)
		running = append(running, p)
		t.Cleanup(func() { p.Kill() })
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	d := &driver{t: t, nc: nc, started: map[string]string{}}
	d.waitAgents(len(procs.Programs) - 1)

	// Before: sagas that finish, and elevations the contractor holds
	// until tick 1.
	first := d.startMany(0, 6)
	held := d.startElevations(6, 3)
	d.waitTerminal(first)
	d.waitHeld(held)

	ns.Shutdown()
	ns.WaitForShutdown()
	// A timed outage: every process must still be running at its end.
	<-time.After(outage)
	for _, p := range running {
		select {
		case <-p.Done():
			t.Fatalf("%s exited during the outage: %v\n%s", p.Name, p.Err(), out.String())
		default:
		}
	}
	ns = boot()

	d.waitAgents(len(procs.Programs) - 1)
	d.tick(1)
	after := d.startMany(9, 6)
	d.waitTerminal(append(append(first, held...), after...))
	for _, p := range running {
		select {
		case <-p.Done():
			t.Fatalf("%s exited: %v\n%s", p.Name, p.Err(), out.String())
		default:
		}
	}
	logs := out.String()
	for _, name := range []string{"coordinator", "household-agent", "government-agent", "insurer-agent", "contractor-agent"} {
		require.Contains(t, logs, "process="+name, "no log of %s", name)
	}
	require.GreaterOrEqual(t, strings.Count(logs, "reconnect to NATS failed; trying again"), len(running), "a log line per outage at least")
	require.GreaterOrEqual(t, strings.Count(logs, "reconnected to NATS"), len(running))

	final := map[string]saga.Execution{}
	for id := range d.started {
		final[id] = d.status(id)
	}
	obs := flood.Observation{Started: d.started, Final: final,
		Government: flood.LedgerChange{Before: opening(flood.Government), After: d.ledger(flood.Government)},
		Insurer:    flood.LedgerChange{Before: opening(flood.Insurer), After: d.ledger(flood.Insurer)}}
	require.Empty(t, flood.CheckInvariants(obs))
	var completed int
	for _, x := range final {
		if x.Status == saga.Completed {
			completed++
		}
	}
	require.Equal(t, len(d.started), completed, "every saga completed")
}

func opening(role string) flood.Ledger {
	amount := agentcmd.DefaultLedger[role]
	return flood.Ledger{Initial: amount, Balance: amount, Spent: map[string]int64{}}
}

type driver struct {
	t       *testing.T
	nc      *nats.Conn
	started map[string]string
}

func (d *driver) request(subject string, req, resp any) {
	d.t.Helper()
	data, err := json.Marshal(req)
	require.NoError(d.t, err)
	var m *nats.Msg
	require.Eventually(d.t, func() bool {
		m, err = d.nc.Request(subject, data, 2*time.Second)
		return err == nil
	}, 60*time.Second, 50*time.Millisecond, "%s never answered: %v", subject, err)
	require.NoError(d.t, json.Unmarshal(m.Data, resp), string(m.Data))
}

func (d *driver) start(sagaType, id string, ctx messages.Context) {
	d.t.Helper()
	var resp messages.StartResponse
	d.request(messages.StartSubject(sagaType), messages.StartRequest{V: 1, SagaID: id, Context: ctx}, &resp)
	require.Nil(d.t, resp.Error)
	d.started[id] = sagaType
}

// startMany starts n subsidy and insurance sagas, of households from
// first on.
func (d *driver) startMany(first, n int) []string {
	var ids []string
	for i := first; i < first+n; i++ {
		h := fmt.Sprintf("h-%d", i)
		id := "s-" + h
		if i%2 == 0 {
			d.start(flood.Subsidy, id, messages.Context{}.MustSet(flood.KeyHousehold, h))
		} else {
			d.start(flood.Insurance, id, messages.Context{}.MustSet(flood.KeyHousehold, h).MustSet(flood.KeyDamage, 3_000_00))
		}
		ids = append(ids, id)
	}
	return ids
}

func (d *driver) startElevations(first, n int) []string {
	var ids []string
	for i := first; i < first+n; i++ {
		h := fmt.Sprintf("h-%d", i)
		id := "e-" + h
		d.start(flood.Elevation, id, messages.Context{}.MustSet(flood.KeyHousehold, h).MustSet(flood.KeyContractorTicks, 1))
		ids = append(ids, id)
	}
	return ids
}

func (d *driver) status(id string) saga.Execution {
	d.t.Helper()
	var resp messages.StatusResponse
	d.request(messages.StatusSubject, messages.StatusRequest{V: 1, SagaID: id}, &resp)
	require.Nil(d.t, resp.Error)
	var x saga.Execution
	require.NoError(d.t, json.Unmarshal(resp.Saga, &x))
	return x
}

func (d *driver) tick(n int64) {
	d.t.Helper()
	var ack messages.TickAck
	d.request(messages.TickSubject, messages.Tick{V: 1, Tick: n}, &ack)
	require.Nil(d.t, ack.Error)
}

func (d *driver) waitTerminal(ids []string) {
	d.t.Helper()
	for _, id := range ids {
		require.Eventually(d.t, func() bool { return d.status(id).Status.Terminal() }, 60*time.Second, 20*time.Millisecond, "saga %s never finished", id)
	}
}

// waitHeld waits until the contractor holds each elevation: it answered
// "working" on the third step.
func (d *driver) waitHeld(ids []string) {
	d.t.Helper()
	for _, id := range ids {
		require.Eventually(d.t, func() bool {
			x := d.status(id)
			return x.Current == 2 && !x.Awaiting
		}, 30*time.Second, 20*time.Millisecond, "the contractor never held %s", id)
	}
}

func (d *driver) waitAgents(n int) {
	d.t.Helper()
	require.Eventually(d.t, func() bool {
		inbox := d.nc.NewRespInbox()
		sub, err := d.nc.SubscribeSync(inbox)
		if err != nil {
			return false
		}
		defer func() { _ = sub.Unsubscribe() }()
		if d.nc.PublishRequest(messages.AgentStatsSubject, inbox, nil) != nil {
			return false
		}
		for range n {
			if _, err := sub.NextMsg(500 * time.Millisecond); err != nil {
				return false
			}
		}
		return true
	}, 60*time.Second, 100*time.Millisecond, "%d agents never answered", n)
}

func (d *driver) ledger(role string) flood.Ledger {
	d.t.Helper()
	store, err := participant.OpenStore(context.Background(), d.nc, role, false, 1)
	require.NoError(d.t, err)
	var l flood.Ledger
	_, err = store.Get(context.Background(), flood.LedgerKey, &l)
	require.NoError(d.t, err)
	return l
}
