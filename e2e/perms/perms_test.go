package perms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agentmain"
	natsaga "github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// configFile is the single-server configuration that includes the same
// auth.conf as the compose cluster.
const configFile = "../../deploy/nats/single.conf"

const (
	coordinatorUser = "coordinator"
	driverUser      = "driver"
	adminUser       = "admin"
	systemUser      = "system"
	operatorUser    = "operator"
)

var agentRoles = []string{flood.Household, flood.Government, flood.Insurer, flood.Contractor}

// inboxPrefix is the inbox prefix auth.conf gives user.
func inboxPrefix(user string) string { return "_INBOX_" + user }

// serverConfig parses configFile as nats-server does.
func serverConfig(t *testing.T) *server.Options {
	t.Helper()
	opts, err := server.ProcessConfigFile(configFile)
	require.NoError(t, err)
	return opts
}

// password returns user's password from the configuration.
func password(t *testing.T, user string) string {
	t.Helper()
	for _, u := range serverConfig(t).Users {
		if u.Username == user {
			return u.Password
		}
	}
	t.Fatalf("no user %q in %s", user, configFile)
	return ""
}

// startServer boots an embedded server from configFile and returns its URL.
func startServer(t *testing.T) string {
	t.Helper()
	ns, err := embedded.Start(embedded.Options{Config: configFile, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	return ns.ClientURL()
}

// client is a connection as one user that records the asynchronous errors
// the server sends it, permission violations among them.
type client struct {
	nc   *nats.Conn
	user string

	mu   sync.Mutex
	errs []error
	got  chan struct{} // signalled on each error
}

func connect(t *testing.T, url, user string) *client {
	t.Helper()
	c := &client{user: user, got: make(chan struct{}, 1)}
	nc, err := nats.Connect(url,
		nats.UserInfo(user, password(t, user)),
		nats.CustomInboxPrefix(inboxPrefix(user)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err)
			c.mu.Unlock()
			select {
			case c.got <- struct{}{}:
			default:
			}
		}))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	c.nc = nc
	return c
}

// violation waits until the server has reported a permissions violation
// for subject to c.
func (c *client) violation(t *testing.T, subject string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		for _, err := range c.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), fmt.Sprintf("%q", subject)) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("%s: no permissions violation for %q; errors: %v", c.user, subject, c.errors())
		}
	}
}

func (c *client) errors() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.errs)
}

// TestConfigNamesMatchTheCode checks that the names spelled by hand in
// auth.conf are those messages/ and flood/ build: every agent may reply on
// its own steps' subjects and on no other, and uses its role's stream and
// consumer.
func TestConfigNamesMatchTheCode(t *testing.T) {
	users := map[string]*server.User{}
	for _, u := range serverConfig(t).Users {
		users[u.Username] = u
	}
	require.Len(t, users, len(agentRoles)+5, "one user per agent role, the coordinator, the driver, the operator, admin and system")
	require.Nil(t, users[adminUser].Permissions, "admin may do anything in natsaga's account")
	require.Equal(t, "SYS", users[systemUser].Account.Name)
	for _, role := range agentRoles {
		t.Run(role, func(t *testing.T) {
			u := users[role]
			require.NotNil(t, u, "user %s", role)
			steps, err := flood.Steps(role)
			require.NoError(t, err)
			var want []string
			for _, s := range steps {
				want = append(want, messages.ReplySubject(s.Saga, s.Name))
			}
			var replies []string
			for _, s := range u.Permissions.Publish.Allow {
				if strings.HasPrefix(s, strings.TrimSuffix(messages.ReplySubjects[0], ">")) {
					replies = append(replies, s)
				}
			}
			require.ElementsMatch(t, want, replies, "reply subjects of %s", role)

			stream, consumer := messages.StateStream(role), messages.CommandConsumer(role)
			records := messages.RecordStream(role)
			require.Subset(t, u.Permissions.Publish.Allow, []string{
				"$JS.API.STREAM.CREATE." + stream,
				"$JS.API.STREAM.UPDATE." + stream,
				"$JS.API.STREAM.INFO." + stream,
				"$JS.API.DIRECT.GET." + stream + ".>",
				messages.StateSubjects(role)[0],
				"$JS.API.STREAM.CREATE." + records,
				"$JS.API.STREAM.UPDATE." + records,
				"$JS.API.STREAM.INFO." + records,
				"$JS.API.DIRECT.GET." + records + ".>",
				"$JS.API.DIRECT.GET." + records,
				"$JS.API.CONSUMER.CREATE." + records + ".>",
				"$JS.API.CONSUMER.MSG.NEXT." + records + ".>",
				messages.RecordSubject(role),
				"$JS.API.STREAM.INFO." + messages.CommandStream,
				"$JS.API.CONSUMER.CREATE." + messages.CommandStream + "." + consumer,
				"$JS.API.CONSUMER.MSG.NEXT." + messages.CommandStream + "." + consumer,
				"$JS.ACK." + messages.CommandStream + "." + consumer + ".>",
			})
			if flood.Serial(role) {
				// A serial batch reads its writers' branches in one request.
				require.Contains(t, u.Permissions.Publish.Allow, "$JS.API.DIRECT.GET."+stream)
			}
			require.ElementsMatch(t, []string{messages.TickSubject, messages.AgentStatsSubject, "$SRV.>", flood.StateSubject(role), inboxPrefix(role) + ".>"},
				u.Permissions.Subscribe.Allow)
		})
	}
	co := users[coordinatorUser]
	require.NotNil(t, co)
	for _, role := range agentRoles {
		records := messages.RecordStream(role)
		require.Subset(t, co.Permissions.Publish.Allow, []string{
			"$JS.API.CONSUMER.CREATE." + records + ".>",
			"$JS.API.CONSUMER.MSG.NEXT." + records + ".>",
			"$JS.ACK." + records + "." + messages.RecordConsumer + ".>",
			"$JS.API.DIRECT.GET." + records + ".>",
		}, role)
	}
	require.Subset(t, co.Permissions.Publish.Allow, append(slices.Clone(messages.CommandSubjects),
		"$KV."+messages.SagaBucket+".>",
		messages.SagaLogSubject,
		"$JS.API.STREAM.PURGE."+messages.SagaLogStream,
		// Read before an update, to say what a hand cut.
		"$JS.API.STREAM.INFO."+messages.ReplyStream,
		"$JS.API.STREAM.INFO."+messages.EventStream,
		"$JS.API.STREAM.INFO."+messages.SagaLogStream,
		"$JS.API.CONSUMER.MSG.NEXT."+messages.SagaLogStream+".>",
		"$JS.API.CONSUMER.MSG.NEXT."+messages.ReplyStream+"."+messages.ReplyConsumer,
		"$JS.ACK."+messages.ReplyStream+"."+messages.ReplyConsumer+".>",
		messages.EventSubjects[0]))
	require.Subset(t, co.Permissions.Subscribe.Allow, []string{messages.StartSubjects, messages.TickSubject,
		messages.StatusSubject, messages.SummarySubject, messages.ListSubject, messages.RetrySubject, messages.AbortSubject})
}

// TestHouseholdDenied shows that a household connection can neither act
// for the government nor read its state.
func TestHouseholdDenied(t *testing.T) {
	url := startServer(t)
	gov := flood.Government
	ledger := messages.DataSubject(gov, flood.LedgerKey)
	cases := []struct {
		name      string
		subscribe bool
		subject   string
	}{
		{name: "publish a government command", subject: messages.ExecuteSubject(flood.Subsidy, "government_evaluates")},
		{name: "publish a government compensation", subject: messages.CompensateSubject(flood.Subsidy, "budget_deducted")},
		{name: "publish a government reply", subject: messages.ReplySubject(flood.Subsidy, "government_evaluates")},
		{name: "write the government's state", subject: ledger},
		{name: "write the coordinator's saga log", subject: messages.SagaLogSubject},
		{name: "direct get of the government's ledger", subject: "$JS.API.DIRECT.GET." + messages.StateStream(gov) + "." + ledger},
		{name: "pull the government's commands", subject: "$JS.API.CONSUMER.MSG.NEXT." + messages.CommandStream + "." + messages.CommandConsumer(gov)},
		{name: "acknowledge a government command", subject: "$JS.ACK." + messages.CommandStream + "." + messages.CommandConsumer(gov) + ".1.1.1.1.1.1"},
		{name: "start a saga", subject: messages.StartSubject(flood.Subsidy)},
		{name: "advance the clock", subject: messages.TickSubject},
		{name: "subscribe to the government's state", subscribe: true, subject: messages.StateSubjects(gov)[0]},
		{name: "subscribe to government commands", subscribe: true, subject: messages.ExecuteSubject(flood.Subsidy, "government_evaluates")},
		{name: "subscribe to the government's inbox", subscribe: true, subject: inboxPrefix(gov) + ".>"},
		{name: "subscribe to every default inbox", subscribe: true, subject: "_INBOX.>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			denied(t, connect(t, url, flood.Household), tc.subscribe, tc.subject)
		})
	}

	t.Run("JetStream publish of a government reply fails", func(t *testing.T) {
		h := connect(t, url, flood.Household)
		js, err := jetstream.New(h.nc)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		subject := messages.ReplySubject(flood.Elevation, "government_approves")
		_, err = js.Publish(ctx, subject, []byte("{}"))
		require.Error(t, err)
		h.violation(t, subject)
	})
}

// TestOthersDenied spot-checks the other users: each stays in its lane.
func TestOthersDenied(t *testing.T) {
	url := startServer(t)
	ledger := messages.DataSubject(flood.Government, flood.LedgerKey)
	cases := []struct {
		name      string
		user      string
		subscribe bool
		subject   string
	}{
		{name: "the driver writes a ledger", user: driverUser, subject: ledger},
		{name: "the driver sends a command", user: driverUser, subject: messages.ExecuteSubject(flood.Subsidy, "budget_deducted")},
		{name: "the driver replies for an agent", user: driverUser, subject: messages.ReplySubject(flood.Subsidy, "budget_deducted")},
		{name: "the driver reads a ledger from the store", user: driverUser, subject: "$JS.API.DIRECT.GET." + messages.StateStream(flood.Government) + "." + ledger},
		{name: "the operator reads a ledger", user: operatorUser, subject: "$JS.API.DIRECT.GET." + messages.StateStream(flood.Government) + "." + ledger},
		{name: "the driver aborts a saga", user: driverUser, subject: messages.AbortSubject},
		{name: "the driver writes the saga bucket", user: driverUser, subject: messages.BucketSubject(messages.SagaKey("x"))},
		{name: "the operator writes the saga bucket", user: operatorUser, subject: messages.BucketSubject(messages.SagaKey("x"))},
		{name: "the coordinator writes a ledger", user: coordinatorUser, subject: ledger},
		{name: "the coordinator replies for an agent", user: coordinatorUser, subject: messages.ReplySubject(flood.Subsidy, "budget_deducted")},
		{name: "the government replies for a household", user: flood.Government, subject: messages.ReplySubject(flood.Subsidy, "household_applies")},
		{name: "the government writes the household's records", user: flood.Government, subject: messages.RecordSubject(flood.Household)},
		{name: "the coordinator writes a record", user: coordinatorUser, subject: messages.RecordSubject(flood.Government)},
		{name: "the driver reads the government's records", user: driverUser, subject: "$JS.API.DIRECT.GET." + messages.RecordStream(flood.Government) + "." + messages.RecordSubject(flood.Government)},
		{name: "the government reads the insurer's state", user: flood.Government, subject: "$JS.API.DIRECT.GET." + messages.StateStream(flood.Insurer) + "." + messages.DataSubject(flood.Insurer, flood.LedgerKey)},
		{name: "the government reads the insurer's branches in one request", user: flood.Government, subject: "$JS.API.DIRECT.GET." + messages.StateStream(flood.Insurer)},
		{name: "the government reads the insurer's records by sequence", user: flood.Government, subject: "$JS.API.DIRECT.GET." + messages.RecordStream(flood.Insurer)},
		{name: "the insurer pulls the contractor's commands", user: flood.Insurer, subject: "$JS.API.CONSUMER.MSG.NEXT." + messages.CommandStream + "." + messages.CommandConsumer(flood.Contractor)},
		{name: "the contractor deletes the commands stream", user: flood.Contractor, subject: "$JS.API.STREAM.DELETE." + messages.CommandStream},
		{name: "the contractor reads the saga events", user: flood.Contractor, subscribe: true, subject: messages.EventSubjects[0]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			denied(t, connect(t, url, tc.user), tc.subscribe, tc.subject)
		})
	}
}

// denied subscribes to subject, or publishes on it, as c and waits for the
// server's permissions violation.
func denied(t *testing.T, c *client, subscribe bool, subject string) {
	t.Helper()
	if subscribe {
		_, err := c.nc.Subscribe(subject, func(*nats.Msg) { t.Errorf("%s received a message on %s", c.user, subject) })
		require.NoError(t, err)
	} else {
		require.NoError(t, c.nc.Publish(subject, []byte("{}")))
	}
	require.NoError(t, c.nc.Flush())
	c.violation(t, subject)
}

// TestSagasCompleteUnderPermissions runs the coordinator and the four
// agents, each as its role's user, and the three flood sagas through them,
// driven by the driver user; no connection may see a permissions
// violation.
func TestSagasCompleteUnderPermissions(t *testing.T) {
	url := startServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	run := func(name string, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}()
	}

	logs := newErrorLog()
	log := slog.New(logs)
	co := connect(t, url, coordinatorUser)
	sizes := &messageSizes{}
	c, err := coordinator.New(co.nc, coordinator.Options{Definitions: flood.Definitions(), Logger: log, Observer: sizes})
	require.NoError(t, err)
	// The first coordinator stops before the end, for a second to
	// recover what it stored.
	firstCtx, stopFirst := context.WithCancel(ctx)
	firstDone := make(chan error, 1)
	go func() { firstDone <- c.Run(firstCtx) }()
	t.Cleanup(func() {
		stopFirst()
		<-firstDone
	})
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready")
	}

	// The agents run as their programs do, configured from the
	// environment the compose file sets.
	for _, role := range agentRoles {
		env := map[string]string{
			"NATS_URL": url, "NATS_USER": role, "NATS_PASSWORD": password(t, role),
			"NATS_INBOX_PREFIX": inboxPrefix(role),
		}
		// One record held in memory: every older one a command needs is
		// read again from the server, under the role's permissions.
		r, err := agentcmd.Role(role)
		require.NoError(t, err)
		run(role+"-agent", func(ctx context.Context) error {
			return agentmain.Serve(ctx, r, []string{"-record-values", "1"}, func(k string) string { return env[k] }, log.With("role", role))
		})
	}

	d := connect(t, url, driverUser)
	waitAgents(t, d.nc, len(agentRoles))

	household := messages.Context{}.MustSet(flood.KeyHousehold, "h1")
	subsidy := start(t, d.nc, flood.Subsidy, household)
	insurance := start(t, d.nc, flood.Insurance, household.Clone().MustSet(flood.KeyDamage, 3_000_00))
	// Damage below the deductible: the insurer rejects the claim and the
	// household's step is compensated.
	rejected := start(t, d.nc, flood.Insurance, household.Clone().MustSet(flood.KeyDamage, 10_00))
	elevation := start(t, d.nc, flood.Elevation, household.Clone().MustSet(flood.KeyContractorTicks, 1))

	waitStatus(t, d.nc, subsidy, saga.Completed, 0)
	waitStatus(t, d.nc, insurance, saga.Completed, 0)
	waitStatus(t, d.nc, rejected, saga.RolledBack, 0)
	// The contractor holds the elevation until the clock has moved one
	// tick past the command.
	waitStatus(t, d.nc, elevation, saga.InProgress, 2)
	tick(t, d.nc, 1)
	waitStatus(t, d.nc, elevation, saga.Completed, 0)

	// The driver asks the government for its ledger with the state query,
	// as the simulation does to check it balances.
	var a flood.StateAnswer
	request(t, d.nc, flood.StateSubject(flood.Government), flood.StateQuery{V: messages.Version, Ledger: true}, &a)
	require.Nil(t, a.Error)
	require.NotNil(t, a.Ledger)
	require.Equal(t, agentcmd.DefaultLedger[flood.Government]-flood.DefaultSubsidyCost-flood.DefaultElevationCost, a.Ledger.Balance)
	// ... and the household and the contractor for what they hold of
	// household h1: each reads a query's households in one direct get.
	for _, role := range []string{flood.Household, flood.Contractor} {
		var a flood.StateAnswer
		request(t, d.nc, flood.StateSubject(role), flood.StateQuery{V: messages.Version, Households: []string{"h1", "h-none"}}, &a)
		require.Nil(t, a.Error, role)
		require.Len(t, a.Households, 1, role)
		require.Contains(t, a.Households, "h1", role)
	}
	// ... and reads the final states from the saga bucket, as its report
	// does.
	dc, err := natsaga.New(d.nc, natsaga.Options{})
	require.NoError(t, err)
	final := 0
	for x, err := range dc.ScanStored(ctx, func(id string) bool { return id != rejected }) {
		require.NoError(t, err)
		require.Equal(t, saga.Completed, x.Status)
		final++
	}
	require.Equal(t, 3, final)
	// ... and starts its sagas in batches, as floodsim does each tick:
	// the coordinator looks their ids up in one read of the bucket.
	started, errs := dc.StartMany(ctx, []natsaga.Start{
		{Saga: flood.Subsidy, ID: "batch-1", Tick: 100, Context: household},
		{Saga: flood.Subsidy, ID: subsidy, Context: household},
	}, 1)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Equal(t, []natsaga.Started{{ID: "batch-1", Status: saga.Pending}, {ID: subsidy, Status: saga.Completed, Existed: true}}, started)

	// The operator asks the coordinator, as cmd/natsaga does.
	op := connect(t, url, operatorUser)
	var sum messages.Summary
	request(t, op.nc, messages.SummarySubject, struct{}{}, &sum)
	require.Equal(t, 4, sum.Completed+sum.RolledBack)
	require.Equal(t, 1, sum.Active, "the saga scheduled in the batch")
	// ... and reads the saga events, as "natsaga events" does.
	js, err := jetstream.New(op.nc)
	require.NoError(t, err)
	events, err := js.OrderedConsumer(ctx, messages.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{messages.EventLogSubject("*", "*")}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	require.NoError(t, err)
	it, err := events.Messages()
	require.NoError(t, err)
	ev, err := it.Next(jetstream.NextMaxWait(10 * time.Second))
	it.Stop()
	require.NoError(t, err, "the coordinator keeps the events in the event stream")
	require.Contains(t, string(ev.Data()), subsidy[:8])
	// ... and reads the stored sagas, as "natsaga outcomes" does.
	kv, err := js.KeyValue(ctx, messages.SagaBucket)
	require.NoError(t, err)
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	require.NoError(t, err)
	stored := 0
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if strings.HasPrefix(e.Key(), messages.SagaKeyPrefix) {
			stored++
		}
	}
	require.NoError(t, w.Stop())
	require.Equal(t, 4, stored, "the four sagas that ended (the one scheduled in the batch is active: in the saga log)")
	// ... and the events of a saga type named by its definition, as
	// "natsaga events -saga subsidy_application" does.
	oc, err := natsaga.New(op.nc, natsaga.Options{})
	require.NoError(t, err)
	// ... and lists finished sagas, which the coordinator reads from the
	// bucket, as "natsaga list -status completed" does.
	done, err := oc.List(ctx, saga.Completed, 10)
	require.NoError(t, err)
	require.Len(t, done, 3)
	seq, err := oc.Watch(ctx, natsaga.Watch{Saga: flood.SubsidySaga().Name, All: true, KeptOnly: true})
	require.NoError(t, err)
	var statuses []string
	for ev, err := range seq {
		require.NoError(t, err)
		if ev.SagaID == subsidy {
			statuses = append(statuses, ev.Status)
		}
	}
	require.Equal(t, []string{"in_progress", "completed"}, statuses)
	// ... and aborts a saga, as "natsaga abort" does: the one scheduled in
	// the batch, which has not begun, ends at once.
	aborted, err := oc.Abort(ctx, "batch-1", "not needed")
	require.NoError(t, err)
	require.Equal(t, natsaga.Aborted{Status: saga.RolledBack}, aborted)

	// The coordinator may list the command stream's consumers, so it
	// learns that the household reads command batches: a tick's starts
	// of one saga type reach it in one message. It reads them every
	// 250 ms; a round of starts goes out before it has, at first.
	for at, deadline := int64(2), time.Now().Add(20*time.Second); sizes.largest() < 3; at++ {
		require.True(t, time.Now().Before(deadline), "no command batch sent under the permissions")
		var ids []string
		for i := range 3 {
			var resp messages.StartResponse
			// Under the deductible: rejected, so no round spends the fund.
			ctx := messages.Context{}.MustSet(flood.KeyHousehold, fmt.Sprintf("h-%d-%d", at, i)).MustSet(flood.KeyDamage, 10_00)
			request(t, d.nc, messages.StartSubject(flood.Insurance), messages.StartRequest{V: messages.Version, Rank: int64(i + 1), Tick: at, Context: ctx}, &resp)
			require.Nil(t, resp.Error)
			ids = append(ids, resp.SagaID)
		}
		tick(t, d.nc, at)
		for _, id := range ids {
			waitStatus(t, d.nc, id, saga.RolledBack, 0)
		}
	}
	// A round of subsidies: the government, a serial role, takes their
	// payments in one message and commits them as one batch, reading
	// their branches in one direct get.
	var ids []string
	for i := range 3 {
		var resp messages.StartResponse
		ctx := messages.Context{}.MustSet(flood.KeyHousehold, fmt.Sprintf("h-paid-%d", i))
		request(t, d.nc, messages.StartSubject(flood.Subsidy), messages.StartRequest{V: messages.Version, Rank: int64(i + 1), Tick: 200, Context: ctx}, &resp)
		require.Nil(t, resp.Error)
		ids = append(ids, resp.SagaID)
	}
	tick(t, d.nc, 200)
	for _, id := range ids {
		waitStatus(t, d.nc, id, saga.Completed, 0)
	}

	// A second coordinator, as the coordinator user, recovers what the
	// first stored: the saga log, the bucket and the roles' record logs.
	var before messages.Summary
	request(t, op.nc, messages.SummarySubject, struct{}{}, &before)
	stopFirst()
	require.NoError(t, <-firstDone)
	firstDone <- nil
	second, err := coordinator.New(connect(t, url, coordinatorUser).nc, coordinator.Options{Definitions: flood.Definitions(), Logger: log})
	require.NoError(t, err)
	run("second coordinator", second.Run)
	select {
	case <-second.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("second coordinator not ready")
	}
	var after messages.Summary
	request(t, op.nc, messages.SummarySubject, struct{}{}, &after)
	require.Positive(t, before.Answered)
	before.Answered = 0 // counted in a term: the second has applied none
	require.Equal(t, before, after, "recovered as the first coordinator left it")

	for _, cl := range []*client{co, d, op} {
		require.Empty(t, cl.errors(), "errors of %s", cl.user)
	}
	require.Empty(t, logs.records(), "errors logged by the coordinator and the agents")
}

// messageSizes is a coordinator observer that keeps the most commands
// one command message held.
type messageSizes struct{ most atomic.Int64 }

func (m *messageSizes) Committed([]messages.Command, []messages.Event, messages.Summary) {}

func (m *messageSizes) Answered(messages.Command, messages.Outcome, int64, time.Duration) {}

func (m *messageSizes) Sent(commands int) {
	for {
		cur := m.most.Load()
		if int64(commands) <= cur || m.most.CompareAndSwap(cur, int64(commands)) {
			return
		}
	}
}

func (m *messageSizes) largest() int64 { return m.most.Load() }

// errorLog is a [slog.Handler] that keeps the records at warning level and
// above, among them the NATS errors (permissions violations) the agents'
// connections report. Handlers derived with WithAttrs share its records.
type errorLog struct {
	sink  *logSink
	attrs []slog.Attr
}

type logSink struct {
	mu   sync.Mutex
	recs []string
}

func newErrorLog() *errorLog { return &errorLog{sink: &logSink{}} }

func (h *errorLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *errorLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s", a)
		return true
	})
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	h.sink.recs = append(h.sink.recs, b.String())
	return nil
}

func (h *errorLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &errorLog{sink: h.sink, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *errorLog) WithGroup(string) slog.Handler { return h }

func (h *errorLog) records() []string {
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	return slices.Clone(h.sink.recs)
}

// waitAgents waits until n agents answer the statistics request.
func waitAgents(t *testing.T, nc *nats.Conn, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		inbox := nc.NewRespInbox()
		sub, err := nc.SubscribeSync(inbox)
		require.NoError(t, err)
		defer func() { _ = sub.Unsubscribe() }()
		require.NoError(t, nc.PublishRequest(messages.AgentStatsSubject, inbox, nil))
		for range n {
			if _, err := sub.NextMsg(500 * time.Millisecond); err != nil {
				return false
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond, "%d agents never answered", n)
}

func request(t *testing.T, nc *nats.Conn, subject string, req, resp any) {
	t.Helper()
	data, err := json.Marshal(req)
	require.NoError(t, err)
	m, err := nc.Request(subject, data, 10*time.Second)
	require.NoError(t, err, subject)
	require.NoError(t, json.Unmarshal(m.Data, resp), string(m.Data))
}

func start(t *testing.T, nc *nats.Conn, sagaType string, ctx messages.Context) string {
	t.Helper()
	var resp messages.StartResponse
	request(t, nc, messages.StartSubject(sagaType), messages.StartRequest{V: messages.Version, Context: ctx}, &resp)
	require.Nil(t, resp.Error)
	return resp.SagaID
}

func tick(t *testing.T, nc *nats.Conn, n int64) {
	t.Helper()
	var ack messages.TickAck
	request(t, nc, messages.TickSubject, messages.Tick{V: messages.Version, Tick: n}, &ack)
	require.Nil(t, ack.Error)
}

// waitStatus waits until saga id has status and at least completed steps
// done.
func waitStatus(t *testing.T, nc *nats.Conn, id string, status saga.Status, completed int) {
	t.Helper()
	var x saga.Execution
	require.Eventually(t, func() bool {
		var resp messages.StatusResponse
		request(t, nc, messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: id}, &resp)
		require.Nil(t, resp.Error)
		require.NoError(t, json.Unmarshal(resp.Saga, &x))
		return x.Status == status && len(x.Completed) >= completed
	}, 20*time.Second, 20*time.Millisecond, "saga %s never reached %s with %d steps done", id, status, completed)
}

// TestAgentRefusesAnotherWireVersionUnderPermissions announces a household
// copy of wire version 2, as such a copy does (a NATS micro service), and
// starts a household agent as its program does, under auth.conf: its
// version check may ask the running agents, and it refuses to start.
func TestAgentRefusesAnotherWireVersionUnderPermissions(t *testing.T) {
	url := startServer(t)
	old := connect(t, url, flood.Household)
	svc, err := micro.AddService(old.nc, micro.Config{Name: messages.AgentService, Version: "2.1.0",
		Metadata: map[string]string{"role": flood.Household, "copy": "household-old", "pid": "7"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })

	env := map[string]string{
		"NATS_URL": url, "NATS_USER": flood.Household, "NATS_PASSWORD": password(t, flood.Household),
		"NATS_INBOX_PREFIX": inboxPrefix(flood.Household),
	}
	r, err := agentcmd.Role(flood.Household)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	err = agentmain.Serve(ctx, r, nil, func(k string) string { return env[k] }, slog.New(newErrorLog()))
	require.ErrorIs(t, err, participant.ErrOtherVersion)
	require.ErrorContains(t, err, "household-old (pid 7, version 2.1.0)")
	require.Empty(t, old.errors())
}
