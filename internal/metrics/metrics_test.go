package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/metrics"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestCoordinatorCounts feeds the coordinator's metrics a batch and two
// answers and reads them back in the text format.
func TestCoordinatorCounts(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.NewCoordinator(reg)
	require.NoError(t, err)
	_, err = metrics.NewCoordinator(reg)
	require.Error(t, err, "registered twice")
	// Before anything is committed, as on a standby: no saga in flight.
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP natsaga_sagas_in_flight Active sagas: all, those awaiting a first answer, and those waiting to retry.
# TYPE natsaga_sagas_in_flight gauge
natsaga_sagas_in_flight{state="active"} 0
natsaga_sagas_in_flight{state="awaiting"} 0
natsaga_sagas_in_flight{state="retrying"} 0
`), "natsaga_sagas_in_flight"))

	cmds := []messages.Command{
		{Saga: "subsidy", Step: "a", Action: messages.Execute, Attempt: 1},
		{Saga: "subsidy", Step: "a", Action: messages.Execute, Attempt: 2},
		{Saga: "subsidy", Step: "a", Action: messages.Compensate, Attempt: 1},
	}
	events := []messages.Event{
		{Saga: "subsidy", Status: "in_progress"}, {Saga: "subsidy", Status: "compensating"},
		{Saga: "subsidy", Status: "rolled_back"}, {Saga: "insurance", Status: "in_progress"},
	}
	m.Committed(cmds, events, messages.Summary{Tick: 7, Active: 3, Awaiting: 2, Retrying: 1})
	m.HeldBytes(4096)
	// The first two in one batch, the compensation alone.
	m.Sent(2)
	m.Sent(1)
	m.RecordsRead("household", 30)
	m.RecordsRead("household", 1)
	m.RecordsRead("government", 4)
	m.Answered(cmds[1], messages.OK, 2, 30*time.Millisecond)
	m.Answered(cmds[2], messages.OK, 0, -1)
	m.Retried("subsidy")
	m.Aborted("subsidy")

	want := `
# HELP natsaga_sagas_started_total Sagas started, by saga type.
# TYPE natsaga_sagas_started_total counter
natsaga_sagas_started_total{saga="insurance"} 1
natsaga_sagas_started_total{saga="subsidy"} 1
# HELP natsaga_sagas_finished_total Sagas that reached a final status, by saga type and status.
# TYPE natsaga_sagas_finished_total counter
natsaga_sagas_finished_total{saga="subsidy",status="rolled_back"} 1
# HELP natsaga_sagas_retried_total Failed sagas an operator's retry sent back to compensating, by saga type: each finishes again.
# TYPE natsaga_sagas_retried_total counter
natsaga_sagas_retried_total{saga="subsidy"} 1
# HELP natsaga_sagas_aborted_total Active sagas an operator's abort rolled back, by saga type.
# TYPE natsaga_sagas_aborted_total counter
natsaga_sagas_aborted_total{saga="subsidy"} 1
# HELP natsaga_command_retries_total Step commands sent again after a transient error (attempt above 1), by saga, step and action.
# TYPE natsaga_command_retries_total counter
natsaga_command_retries_total{action="execute",saga="subsidy",step="a"} 1
# HELP natsaga_sagas_in_flight Active sagas: all, those awaiting a first answer, and those waiting to retry.
# TYPE natsaga_sagas_in_flight gauge
natsaga_sagas_in_flight{state="active"} 3
natsaga_sagas_in_flight{state="awaiting"} 2
natsaga_sagas_in_flight{state="retrying"} 1
# HELP natsaga_sagas_in_flight_bytes Bytes the active sagas hold, counted approximately (contexts, outputs, histories, as encoded): what -max-active-bytes bounds.
# TYPE natsaga_sagas_in_flight_bytes gauge
natsaga_sagas_in_flight_bytes 4096
# HELP natsaga_tick The coordinator's simulation clock.
# TYPE natsaga_tick gauge
natsaga_tick 7
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"natsaga_sagas_started_total", "natsaga_sagas_finished_total", "natsaga_sagas_retried_total", "natsaga_sagas_aborted_total", "natsaga_command_retries_total", "natsaga_sagas_in_flight", "natsaga_sagas_in_flight_bytes", "natsaga_tick"))
	sent := `
# HELP natsaga_commands_sent_total Step commands published, retries included, by saga, step and action.
# TYPE natsaga_commands_sent_total counter
natsaga_commands_sent_total{action="compensate",saga="subsidy",step="a"} 1
natsaga_commands_sent_total{action="execute",saga="subsidy",step="a"} 2
# HELP natsaga_steps_total Step commands settled by an answer, by saga, step, action and outcome (ok, failed, error).
# TYPE natsaga_steps_total counter
natsaga_steps_total{action="compensate",outcome="ok",saga="subsidy",step="a"} 1
natsaga_steps_total{action="execute",outcome="ok",saga="subsidy",step="a"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(sent), "natsaga_commands_sent_total", "natsaga_steps_total"))
	// Two answers timed in ticks; the one a predecessor sent, not in seconds.
	fams, err := reg.Gather()
	require.NoError(t, err)
	counts := map[string]uint64{}
	sums := map[string]float64{}
	for _, f := range fams {
		for _, mm := range f.Metric {
			if h := mm.GetHistogram(); h != nil {
				counts[f.GetName()] += h.GetSampleCount()
				sums[f.GetName()] += h.GetSampleSum()
			}
		}
	}
	require.Equal(t, map[string]uint64{"natsaga_step_latency_ticks": 2, "natsaga_step_latency_seconds": 1, "natsaga_command_message_commands": 2,
		"natsaga_record_message_records": 3}, counts)
	require.Equal(t, 3.0, sums["natsaga_command_message_commands"], "the commands of the two messages")
	require.Equal(t, 35.0, sums["natsaga_record_message_records"], "the records of the three messages")
}

// TestLedgerLeftOutWhenUnread: a ledger read that fails leaves the gauge
// out of the scrape rather than reporting zero.
func TestLedgerLeftOutWhenUnread(t *testing.T) {
	reg := prometheus.NewRegistry()
	var fail bool
	require.NoError(t, metrics.RegisterLedger(reg, "government", func(context.Context) (int64, error) {
		if fail {
			return 0, errors.New("store down")
		}
		return 12345, nil
	}, nil))
	want := `
# HELP natsaga_ledger_balance_cents Balance of a flood role's ledger (the government's budget, the insurer's fund), in cents.
# TYPE natsaga_ledger_balance_cents gauge
natsaga_ledger_balance_cents{role="government"} 12345
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want)))
	fail = true
	require.Equal(t, 0, testutil.CollectAndCount(reg))
}

// TestAgentCounters reads an agent's statistics at each scrape.
func TestAgentCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := messages.AgentStats{Role: "insurer", Agent: "insurer-1", Handled: 5, Executed: 4, Compensated: 1, Duplicates: 2, Refused: 3, Redelivered: 6, Rejected: 7, Batches: 2, Batched: 11, Messages: 4, RecordMessages: 3, Records: 8, Conflicts: 1}
	require.NoError(t, metrics.RegisterAgent(reg, func() messages.AgentStats { return s }))
	s.Handled = 9 // read at the scrape, not at registration
	want := `
# HELP natsaga_agent_commands_handled_total Commands this agent received and answered.
# TYPE natsaga_agent_commands_handled_total counter
natsaga_agent_commands_handled_total{agent="insurer-1",role="insurer"} 9
# HELP natsaga_agent_command_messages_total Command messages this agent took in: one per command sent alone, one per batch.
# TYPE natsaga_agent_command_messages_total counter
natsaga_agent_command_messages_total{agent="insurer-1",role="insurer"} 4
# HELP natsaga_agent_duplicates_absorbed_total Commands delivered again that the barrier answered without running them.
# TYPE natsaga_agent_duplicates_absorbed_total counter
natsaga_agent_duplicates_absorbed_total{agent="insurer-1",role="insurer"} 2
# HELP natsaga_agent_refusals_total Executes refused because their compensation came first.
# TYPE natsaga_agent_refusals_total counter
natsaga_agent_refusals_total{agent="insurer-1",role="insurer"} 3
# HELP natsaga_agent_redeliveries_total Commands JetStream delivered to this agent more than once.
# TYPE natsaga_agent_redeliveries_total counter
natsaga_agent_redeliveries_total{agent="insurer-1",role="insurer"} 6
# HELP natsaga_agent_batches_total Batches of commands a serial role's copy committed together.
# TYPE natsaga_agent_batches_total counter
natsaga_agent_batches_total{agent="insurer-1",role="insurer"} 2
# HELP natsaga_agent_batched_commands_total Commands run in those batches.
# TYPE natsaga_agent_batched_commands_total counter
natsaga_agent_batched_commands_total{agent="insurer-1",role="insurer"} 11
# HELP natsaga_agent_record_messages_total Messages this agent wrote to its role's record log.
# TYPE natsaga_agent_record_messages_total counter
natsaga_agent_record_messages_total{agent="insurer-1",role="insurer"} 3
# HELP natsaga_agent_records_total Barrier records in those messages.
# TYPE natsaga_agent_records_total counter
natsaga_agent_records_total{agent="insurer-1",role="insurer"} 8
# HELP natsaga_agent_conflicts_total Optimistic retries of this agent's store: commands run again, and messages of records refused, because another copy wrote first.
# TYPE natsaga_agent_conflicts_total counter
natsaga_agent_conflicts_total{agent="insurer-1",role="insurer"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		"natsaga_agent_commands_handled_total", "natsaga_agent_command_messages_total", "natsaga_agent_duplicates_absorbed_total", "natsaga_agent_refusals_total", "natsaga_agent_redeliveries_total",
		"natsaga_agent_batches_total", "natsaga_agent_batched_commands_total",
		"natsaga_agent_record_messages_total", "natsaga_agent_records_total", "natsaga_agent_conflicts_total"))
	require.Equal(t, 13, testutil.CollectAndCount(reg))
}

// TestDefinedTypeShowsAtZero: a saga type the coordinator is told of
// after it started shows its started, retried and finished series at
// zero, before any of its sagas ran.
func TestDefinedTypeShowsAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.NewCoordinator(reg)
	require.NoError(t, err)
	m.Defined(saga.Definition{Name: "vaccination", Subject: "vax", Steps: []saga.Step{{Name: "book", Role: "clinic"}}})
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP natsaga_sagas_started_total Sagas started, by saga type.
# TYPE natsaga_sagas_started_total counter
natsaga_sagas_started_total{saga="vax"} 0
# HELP natsaga_sagas_finished_total Sagas that reached a final status, by saga type and status.
# TYPE natsaga_sagas_finished_total counter
natsaga_sagas_finished_total{saga="vax",status="completed"} 0
natsaga_sagas_finished_total{saga="vax",status="failed"} 0
natsaga_sagas_finished_total{saga="vax",status="rolled_back"} 0
natsaga_sagas_finished_total{saga="vax",status="timed_out"} 0
# HELP natsaga_sagas_retried_total Failed sagas an operator's retry sent back to compensating, by saga type: each finishes again.
# TYPE natsaga_sagas_retried_total counter
natsaga_sagas_retried_total{saga="vax"} 0
`), "natsaga_sagas_started_total", "natsaga_sagas_finished_total", "natsaga_sagas_retried_total"))
}
