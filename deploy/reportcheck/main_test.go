package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/messages"
)

// goodReport is a report that passes: two subsidy sagas, one completed and
// one rolled back, two busy household agents, a balanced budget.
func goodReport() *report {
	r := &report{
		Sagas:   map[string]map[string]int{"subsidy": {"completed": 1, "rolled_back": 1, "failed": 0}},
		Planned: map[string]int{"subsidy": 2},
		Agents: []messages.AgentStats{
			{Role: "household", Agent: "household-a", Handled: 3},
			{Role: "household", Agent: "household-b", Handled: 1},
			{Role: "government", Agent: "government-a", Handled: 0},
		},
		Ledgers: map[string]flood.LedgerChange{"government": {
			Before: flood.Ledger{Initial: 100, Balance: 100},
			After:  flood.Ledger{Initial: 100, Balance: 60, Spent: map[string]int64{"subsidy": 40}},
		}},
	}
	r.Invariants.OK = true
	return r
}

func TestCheck(t *testing.T) {
	cases := []struct {
		name   string
		change func(r *report)
		spread spread
		want   []string
	}{
		{name: "good", change: func(*report) {}},
		{name: "good with spread", change: func(*report) {}, spread: spread{"household": 2}},
		{name: "invariants", change: func(r *report) {
			r.Invariants.OK = false
			r.Invariants.Violations = []string{"budget overspent"}
		}, want: []string{"invariants violated: budget overspent"}},
		{name: "failed saga", change: func(r *report) {
			r.Sagas["subsidy"] = map[string]int{"completed": 1, "failed": 1}
		}, want: []string{"subsidy: 1 sagas failed"}},
		{name: "saga not finished", change: func(r *report) {
			r.Sagas["subsidy"] = map[string]int{"completed": 1, "in_progress": 1}
		}, want: []string{"subsidy: 1 sagas in_progress, not finished", "subsidy: 2 sagas planned, 1 finished"}},
		{name: "saga lost", change: func(r *report) {
			r.Sagas["subsidy"] = map[string]int{"completed": 1, "lost": 1}
		}, want: []string{"subsidy: 1 sagas lost, not finished", "subsidy: 2 sagas planned, 1 finished"}},
		{name: "ledger off", change: func(r *report) {
			r.Ledgers["government"] = flood.LedgerChange{After: flood.Ledger{Initial: 100, Balance: 70, Spent: map[string]int64{"subsidy": 40}}}
		}, want: []string{"ledger government does not balance: initial 100 - balance 70 != spent 40"}},
		{name: "work not spread", change: func(*report) {}, spread: spread{"household": 3, "government": 1},
			want: []string{"0 government agents handled commands, want at least 1", "2 household agents handled commands, want at least 3"}},
		{name: "aborted", change: func(r *report) { r.Aborted = "system stopped answering" },
			want: []string{"run aborted: system stopped answering"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := goodReport()
			tc.change(r)
			require.Equal(t, tc.want, check(r, tc.spread))
		})
	}
}

func TestMainCode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "report.json")
	data, err := json.Marshal(goodReport())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data, 0o644))

	var out, errOut bytes.Buffer
	require.Equal(t, 0, mainCode([]string{"-spread", "household=2", path}, &out, &errOut), errOut.String())
	require.Contains(t, out.String(), "agent household  household-a              handled      3")
	require.Contains(t, out.String(), "report ok")

	out.Reset()
	require.Equal(t, 1, mainCode([]string{"-spread", "household=3", path}, &out, &errOut))
	require.Contains(t, out.String(), "FAIL: 2 household agents handled commands, want at least 3")

	require.Equal(t, 2, mainCode([]string{"-spread", "household", path}, &out, &errOut))
	require.Equal(t, 2, mainCode([]string{filepath.Join(t.TempDir(), "missing.json")}, &out, &errOut))
	require.Equal(t, 2, mainCode(nil, &out, &errOut))
}

// TestMetricsAgainstTheReport serves the coordinators' metrics, split over
// two, and checks them against goodReport: matching, then one off.
func TestMetricsAgainstTheReport(t *testing.T) {
	serve := func(body string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write([]byte(body))
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	active := serve(`# TYPE natsaga_sagas_started_total counter
natsaga_sagas_started_total{saga="subsidy"} 2
# TYPE natsaga_sagas_finished_total counter
natsaga_sagas_finished_total{saga="subsidy",status="completed"} 1
natsaga_sagas_finished_total{saga="subsidy",status="rolled_back"} 1
natsaga_sagas_finished_total{saga="subsidy",status="failed"} 0
`)
	standby := serve(`# TYPE natsaga_sagas_started_total counter
natsaga_sagas_started_total{saga="subsidy"} 0
`)
	require.Empty(t, checkMetrics(context.Background(), goodReport(), []string{"http://" + active + "/metrics", "http://" + standby + "/metrics"}))

	r := goodReport()
	r.Sagas["subsidy"]["completed"] = 2
	require.Equal(t, []string{
		`metrics: natsaga_sagas_finished_total{saga="subsidy",status="completed"} is 1, the report says 2`,
		`metrics: natsaga_sagas_started_total{saga="subsidy"} is 2, the report says 3`,
	}, checkMetrics(context.Background(), r, []string{"http://" + active + "/metrics"}))

	// Through the flag, as the compose test runs it.
	path := filepath.Join(t.TempDir(), "r.json")
	data, err := json.Marshal(goodReport())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, data, 0o644))
	var out bytes.Buffer
	require.Equal(t, 0, mainCode([]string{"-metrics", active, "-metrics", standby, path}, &out, &out), out.String())
	require.Equal(t, 1, mainCode([]string{"-metrics", standby, path}, &out, &out))
	require.Contains(t, out.String(), "natsaga_sagas_started_total")
}
