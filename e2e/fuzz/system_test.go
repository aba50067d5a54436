package fuzz_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agentmain"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// configFile is the single-server configuration that includes auth.conf.
const configFile = "../../deploy/nats/single.conf"

const (
	coordinatorUser = "coordinator"
	driverUser      = "driver"
	operatorUser    = "operator"
	adminUser       = "admin"
)

var agentRoles = []string{flood.Household, flood.Government, flood.Insurer, flood.Contractor}

// users maps each user of auth.conf to its configuration.
func users(t *testing.T) map[string]*server.User {
	t.Helper()
	opts, err := server.ProcessConfigFile(configFile)
	require.NoError(t, err)
	out := map[string]*server.User{}
	for _, u := range opts.Users {
		out[u.Username] = u
	}
	return out
}

// system is a server under auth.conf, a coordinator and the agents started
// so far, each as its own user, and a driver connection.
type system struct {
	t     *testing.T
	url   string
	users map[string]*server.User
	coord *coordinator.Coordinator
	// driver is connected as the driver user.
	driver *nats.Conn
	// inspector is connected as the admin user: the test's own eye on the
	// agents' stores, which the driver may not read.
	inspector *nats.Conn
	logs      *warnLog
	ctx       context.Context
	wg        sync.WaitGroup
	// exited receives the name of every process that returned.
	exited chan string
	// started maps every saga started to its type, for the invariants.
	started map[string]string
}

func newSystem(t *testing.T) *system {
	t.Helper()
	ns, err := embedded.Start(embedded.Options{Config: configFile, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithCancel(context.Background())
	s := &system{t: t, url: ns.ClientURL(), users: users(t), ctx: ctx, logs: &warnLog{}, exited: make(chan string, 16)}
	t.Cleanup(func() {
		cancel()
		s.wg.Wait()
	})
	c, err := coordinator.New(s.connect(coordinatorUser), coordinator.Options{Definitions: flood.Definitions(),
		Logger: slog.New(s.logs).With("process", "coordinator")})
	require.NoError(t, err)
	s.run("coordinator", c.Run)
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready")
	}
	s.coord = c
	s.driver = s.connect(driverUser)
	s.inspector = s.connect(adminUser)
	return s
}

// connect connects as user, with its password and inbox prefix.
func (s *system) connect(user string) *nats.Conn {
	s.t.Helper()
	u := s.users[user]
	require.NotNil(s.t, u, "no user %s", user)
	nc, err := nats.Connect(s.url, nats.UserInfo(user, u.Password), nats.CustomInboxPrefix("_INBOX_"+user),
		nats.MaxReconnects(-1), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	require.NoError(s.t, err)
	s.t.Cleanup(nc.Close)
	return nc
}

// run runs a process until the test ends; one that returns before is
// reported on exited, and fails the test when it returned an error.
func (s *system) run(name string, fn func(context.Context) error) {
	s.wg.Go(func() {
		err := fn(s.ctx)
		if s.ctx.Err() == nil {
			s.t.Errorf("%s stopped: %v", name, err)
			s.exited <- name
		}
	})
}

// agent starts role's agent as its program does, configured from the
// environment the compose file sets.
func (s *system) agent(role string) {
	s.t.Helper()
	env := map[string]string{"NATS_URL": s.url, "NATS_USER": role, "NATS_PASSWORD": s.users[role].Password,
		"NATS_INBOX_PREFIX": "_INBOX_" + role}
	r, err := agentcmd.Role(role)
	require.NoError(s.t, err)
	log := slog.New(s.logs).With("process", role+"-agent")
	s.run(role+"-agent", func(ctx context.Context) error {
		return agentmain.Serve(ctx, r, nil, func(k string) string { return env[k] }, log)
	})
}

// alive fails the test when a process has stopped.
func (s *system) alive() {
	s.t.Helper()
	select {
	case name := <-s.exited:
		s.t.Fatalf("%s stopped", name)
	default:
	}
	// The coordinator answers.
	var sum messages.Summary
	s.request(messages.SummarySubject, struct{}{}, &sum)
}

// waitAgents waits until n agents answer the statistics request.
func (s *system) waitAgents(n int) []messages.AgentStats {
	s.t.Helper()
	var stats []messages.AgentStats
	require.Eventually(s.t, func() bool {
		stats = stats[:0]
		inbox := s.driver.NewRespInbox()
		sub, err := s.driver.SubscribeSync(inbox)
		require.NoError(s.t, err)
		defer func() { _ = sub.Unsubscribe() }()
		require.NoError(s.t, s.driver.PublishRequest(messages.AgentStatsSubject, inbox, nil))
		for range n {
			m, err := sub.NextMsg(500 * time.Millisecond)
			if err != nil {
				return false
			}
			var st messages.AgentStats
			require.NoError(s.t, json.Unmarshal(m.Data, &st))
			stats = append(stats, st)
		}
		return true
	}, 20*time.Second, 100*time.Millisecond, "%d agents never answered", n)
	return stats
}

func (s *system) request(subject string, req, resp any) {
	s.t.Helper()
	data, err := json.Marshal(req)
	require.NoError(s.t, err)
	m, err := s.driver.Request(subject, data, 10*time.Second)
	require.NoError(s.t, err, subject)
	require.NoError(s.t, json.Unmarshal(m.Data, resp), string(m.Data))
}

func (s *system) start(sagaType string, ctx messages.Context) string {
	s.t.Helper()
	var resp messages.StartResponse
	s.request(messages.StartSubject(sagaType), messages.StartRequest{V: messages.Version, Context: ctx}, &resp)
	require.Nil(s.t, resp.Error)
	return resp.SagaID
}

func (s *system) status(id string) saga.Execution {
	s.t.Helper()
	var resp messages.StatusResponse
	s.request(messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: id}, &resp)
	require.Nil(s.t, resp.Error)
	var x saga.Execution
	require.NoError(s.t, json.Unmarshal(resp.Saga, &x))
	return x
}

func (s *system) waitStatus(id string, status saga.Status) saga.Execution {
	s.t.Helper()
	var x saga.Execution
	require.Eventually(s.t, func() bool {
		x = s.status(id)
		return x.Status == status
	}, 20*time.Second, 20*time.Millisecond, "saga %s never reached %s", id, status)
	return x
}

// ledger reads role's ledger from its store, as the inspector.
func (s *system) ledger(role string) flood.Ledger {
	s.t.Helper()
	store, err := participant.OpenStore(context.Background(), s.inspector, role, false, 1)
	require.NoError(s.t, err)
	var l flood.Ledger
	_, err = store.Get(context.Background(), flood.LedgerKey, &l)
	require.NoError(s.t, err)
	return l
}

// warnLog keeps every record at warn and above.
type warnLog struct {
	mu    sync.Mutex
	recs  []string
	attrs []slog.Attr
	root  *warnLog
}

func (h *warnLog) sink() *warnLog {
	if h.root != nil {
		return h.root
	}
	return h
}

func (h *warnLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s", a)
		return true
	})
	root := h.sink()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.recs = append(root.recs, b.String())
	return nil
}

func (h *warnLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &warnLog{root: h.sink(), attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *warnLog) WithGroup(string) slog.Handler { return h }

// matching returns the records that contain every one of parts.
func (h *warnLog) matching(parts ...string) []string {
	root := h.sink()
	root.mu.Lock()
	defer root.mu.Unlock()
	var out []string
next:
	for _, r := range root.recs {
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}
