package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"context"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
	"github.com/natsaga/natsaga/internal/metrics"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// scrape fetches url's /metrics and parses the Prometheus text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"), resp.Header.Get("Content-Type"))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// value returns the value of the sample of family name whose labels are
// labels (exactly), and false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		if len(m.Label) != len(labels) {
			continue
		}
		for _, l := range m.Label {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// sum adds the values of every sample of family name whose labels include
// match.
func sum(fams map[string]*dto.MetricFamily, name string, match map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, m := range f.Metric {
		for k, v := range match {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Histogram != nil:
			total += float64(m.Histogram.GetSampleCount())
		}
	}
	return total
}

// TestMetricsMatchTheReport runs a simulation against a coordinator and
// one agent per role that serve their metrics over HTTP as the programs
// do, scrapes them in the Prometheus text format, and checks each against
// the run's JSON report.
func TestMetricsMatchTheReport(t *testing.T) {
	c, err := parseFlags(append([]string{"-spawn=false", "-expect-agents", "4"}, small...), env(), io.Discard)
	require.NoError(t, err)
	sc, err := flood.NewScenario(c.scenario)
	require.NoError(t, err)
	_, url := testenv.Server(t)

	coReg := metrics.NewRegistry()
	m, err := metrics.NewCoordinator(coReg)
	require.NoError(t, err)
	m.Known(flood.Definitions())
	co, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: flood.Definitions(), Observer: m})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	<-co.Ready()
	coSrv := httptest.NewServer(metrics.Handler(coReg, "coordinator", co.Health))
	t.Cleanup(coSrv.Close)

	ledger := map[string]int64{flood.Government: sc.GovernmentBudget, flood.Insurer: sc.InsurerFund}
	agentSrv := map[string]string{}
	for _, role := range roles() {
		steps, err := flood.Steps(role)
		require.NoError(t, err)
		opts := participant.Options{Role: role, Name: role + "-1", Steps: steps, Serial: flood.Serial(role)}
		if l, ok := ledger[role]; ok {
			opts.Init = flood.InitLedger(l)
		}
		a := testenv.Agent(t, url, opts)
		reg := metrics.NewRegistry()
		require.NoError(t, metrics.RegisterAgent(reg, a.Stats))
		if _, ok := ledger[role]; ok {
			require.NoError(t, agentcmd.RegisterMetrics(reg, a, nil))
		}
		srv := httptest.NewServer(metrics.Handler(reg, "agent", a.Health))
		t.Cleanup(srv.Close)
		agentSrv[role] = srv.URL
		serveQueries(t, url, role)
	}

	c.conn.URL = url
	c.jsonPath = filepath.Join(t.TempDir(), "report.json")
	require.NoError(t, run(context.Background(), c, io.Discard, io.Discard))
	data, err := os.ReadFile(c.jsonPath)
	require.NoError(t, err)
	var r report
	require.NoError(t, json.Unmarshal(data, &r))
	require.True(t, r.Invariants.OK, r.Invariants.Violations)

	fams := scrape(t, coSrv.URL)
	total := 0
	for typ, counts := range r.Sagas {
		n := 0
		for st, k := range counts {
			n += k
			v, ok := value(fams, "natsaga_sagas_finished_total", map[string]string{"saga": typ, "status": st})
			require.True(t, ok, "%s %s", typ, st)
			require.EqualValues(t, k, v, "finished %s %s", typ, st)
		}
		v, ok := value(fams, "natsaga_sagas_started_total", map[string]string{"saga": typ})
		require.True(t, ok)
		require.EqualValues(t, n, v, "started %s", typ)
		total += n
	}
	require.Positive(t, total)
	active, ok := value(fams, "natsaga_sagas_in_flight", map[string]string{"state": "active"})
	require.True(t, ok)
	require.Zero(t, active)
	tick, ok := value(fams, "natsaga_tick", map[string]string{})
	require.True(t, ok)
	require.EqualValues(t, r.Ticks+r.ExtraTicks, tick)

	// Every command went out in a message, and a tick's starts in
	// batches: fewer messages than commands.
	sizes := fams["natsaga_command_message_commands"]
	require.NotNil(t, sizes)
	h := sizes.Metric[0].Histogram
	require.Equal(t, sum(fams, "natsaga_commands_sent_total", nil), h.GetSampleSum())
	require.Less(t, float64(h.GetSampleCount()), h.GetSampleSum())

	// The agents' records came in messages of many: every role's log was
	// read, in fewer messages than records.
	records := fams["natsaga_record_message_records"]
	require.NotNil(t, records)
	roles := map[string]bool{}
	var msgs uint64
	var recs float64
	for _, m := range records.Metric {
		for _, l := range m.GetLabel() {
			roles[l.GetValue()] = true
		}
		msgs += m.GetHistogram().GetSampleCount()
		recs += m.GetHistogram().GetSampleSum()
	}
	require.Equal(t, map[string]bool{flood.Household: true, flood.Government: true, flood.Insurer: true, flood.Contractor: true}, roles)
	require.Less(t, float64(msgs), recs)

	// Every settled step was timed, in ticks and in seconds.
	settled := sum(fams, "natsaga_steps_total", nil)
	require.Positive(t, settled)
	require.Equal(t, settled, sum(fams, "natsaga_step_latency_ticks", nil))
	require.Equal(t, settled, sum(fams, "natsaga_step_latency_seconds", nil))
	// A completed saga settled each of its steps ok.
	completed := 0
	for typ, counts := range r.Sagas {
		for _, d := range flood.Definitions() {
			if d.Subject == typ {
				completed += counts["completed"] * len(d.Steps)
			}
		}
	}
	require.LessOrEqual(t, float64(completed), sum(fams, "natsaga_steps_total", map[string]string{"action": string(messages.Execute), "outcome": "ok"}))
	// Every rolled-back saga had at least one execute answered "failed"
	// or one compensation; compensations answered ok are the agents'.
	var compensated int64
	for _, a := range r.Agents {
		compensated += a.Compensated
	}
	require.EqualValues(t, compensated, sum(fams, "natsaga_steps_total", map[string]string{"action": string(messages.Compensate), "outcome": "ok"}))

	// The agents: their counters and the ledgers.
	require.Len(t, r.Agents, 4)
	for _, a := range r.Agents {
		fams := scrape(t, agentSrv[a.Role])
		l := map[string]string{"role": a.Role, "agent": a.Agent}
		for name, want := range map[string]int64{
			"natsaga_agent_commands_handled_total":    a.Handled,
			"natsaga_agent_executed_total":            a.Executed,
			"natsaga_agent_compensated_total":         a.Compensated,
			"natsaga_agent_duplicates_absorbed_total": a.Duplicates,
			"natsaga_agent_refusals_total":            a.Refused,
			"natsaga_agent_redeliveries_total":        a.Redelivered,
		} {
			v, ok := value(fams, name, l)
			require.True(t, ok, "%s %v", name, l)
			require.EqualValues(t, want, v, "%s %v", name, l)
		}
		require.Positive(t, a.Handled)
	}
	for role, l := range r.Ledgers {
		v, ok := value(scrape(t, agentSrv[role]), "natsaga_ledger_balance_cents", map[string]string{"role": role})
		require.True(t, ok, role)
		require.EqualValues(t, l.After.Balance, v, role)
		require.NotEqual(t, l.Before.Balance, l.After.Balance, "the run spent from %s", role)
	}
	_, ok = value(scrape(t, agentSrv[flood.Household]), "natsaga_ledger_balance_cents", map[string]string{"role": flood.Household})
	require.False(t, ok, "a household holds no ledger")

	// Readiness: the coordinator and the agents are ready.
	for _, u := range append([]string{coSrv.URL}, agentSrv[flood.Household]) {
		resp, err := http.Get(u + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
}
