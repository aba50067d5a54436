package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TickBuckets are the buckets, in ticks, of the step latency histogram.
var TickBuckets = []float64{0, 1, 2, 3, 5, 8, 13, 21}

// SecondBuckets are the buckets, in seconds, of the step latency histogram.
var SecondBuckets = prometheus.ExponentialBuckets(0.0005, 2, 16)

// Coordinator holds the coordinator's metrics. It implements
// coordinator.Observer; pass it in coordinator.Options.Observer. It is
// safe for concurrent use.
type Coordinator struct {
	started, finished, retried, aborted *prometheus.CounterVec
	commands                            *prometheus.CounterVec
	retries                             *prometheus.CounterVec
	steps                               *prometheus.CounterVec
	ticks, seconds                      *prometheus.HistogramVec
	inFlight                            *prometheus.GaugeVec
	tick                                prometheus.Gauge
	heldBytes                           prometheus.Gauge
	batchSize                           prometheus.Histogram
	recordSize                          *prometheus.HistogramVec
}

// NewCoordinator registers the coordinator's metrics with reg and returns
// them. It returns an error when reg has metrics of the same names.
func NewCoordinator(reg prometheus.Registerer) (*Coordinator, error) {
	stepLabels := []string{"saga", "step", "action"}
	m := &Coordinator{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsaga_sagas_started_total", Help: "Sagas started, by saga type.",
		}, []string{"saga"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsaga_sagas_finished_total", Help: "Sagas that reached a final status, by saga type and status.",
		}, []string{"saga", "status"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsaga_sagas_retried_total", Help: "Failed sagas an operator's retry sent back to compensating, by saga type: each finishes again.",
		}, []string{"saga"}),
		aborted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsaga_sagas_aborted_total", Help: "Active sagas an operator's abort rolled back, by saga type.",
		}, []string{"saga"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsaga_commands_sent_total", Help: "Step commands published, retries included, by saga, step and action.",
		}, stepLabels),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsaga_command_retries_total", Help: "Step commands sent again after a transient error (attempt above 1), by saga, step and action.",
		}, stepLabels),
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "natsaga_steps_total", Help: "Step commands settled by an answer, by saga, step, action and outcome (ok, failed, error).",
		}, append(stepLabels, "outcome")),
		ticks: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "natsaga_step_latency_ticks", Help: "Simulation ticks from sending a step command to its settling answer.",
			Buckets: TickBuckets,
		}, stepLabels),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "natsaga_step_latency_seconds", Help: "Wall-clock seconds from publishing a step command to applying its settling answer.",
			Buckets: SecondBuckets,
		}, stepLabels),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "natsaga_sagas_in_flight", Help: "Active sagas: all, those awaiting a first answer, and those waiting to retry.",
		}, []string{"state"}),
		tick: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natsaga_tick", Help: "The coordinator's simulation clock.",
		}),
		heldBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "natsaga_sagas_in_flight_bytes",
			Help: "Bytes the active sagas hold, counted approximately (contexts, outputs, histories, as encoded): what -max-active-bytes bounds.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "natsaga_command_message_commands", Help: "Commands per command message published: 1 for a command sent alone, more for a batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
		recordSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "natsaga_record_message_records", Help: "Barrier records per message of a role's record log read, by role.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}, []string{"role"}),
	}
	for _, c := range []prometheus.Collector{m.started, m.finished, m.retried, m.aborted, m.commands, m.retries, m.steps, m.ticks, m.seconds, m.inFlight, m.tick, m.heldBytes, m.batchSize, m.recordSize} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("coordinator metrics: %w", err)
		}
	}
	// A standby, which commits nothing, shows no saga in flight.
	for _, state := range []string{"active", "awaiting", "retrying"} {
		m.inFlight.WithLabelValues(state)
	}
	return m, nil
}

// Sent observes the commands of one command message.
func (m *Coordinator) Sent(commands int) { m.batchSize.Observe(float64(commands)) }

// RecordsRead observes the records of one message of role's record log.
func (m *Coordinator) RecordsRead(role string, records int) {
	m.recordSize.WithLabelValues(role).Observe(float64(records))
}

// Committed counts a stored batch's commands and events, and sets the
// gauges from sum.
func (m *Coordinator) Committed(cmds []messages.Command, events []messages.Event, sum messages.Summary) {
	for i := range cmds {
		c := &cmds[i]
		m.commands.WithLabelValues(c.Saga, c.Step, string(c.Action)).Inc()
		if c.Attempt > 1 {
			m.retries.WithLabelValues(c.Saga, c.Step, string(c.Action)).Inc()
		}
	}
	for i := range events {
		ev := &events[i]
		switch st := saga.Status(ev.Status); {
		case st == saga.InProgress:
			m.started.WithLabelValues(ev.Saga).Inc()
		case st.Terminal():
			m.finished.WithLabelValues(ev.Saga, ev.Status).Inc()
		}
	}
	m.inFlight.WithLabelValues("active").Set(float64(sum.Active))
	m.inFlight.WithLabelValues("awaiting").Set(float64(sum.Awaiting))
	m.inFlight.WithLabelValues("retrying").Set(float64(sum.Retrying))
	m.tick.Set(float64(sum.Tick))
}

// HeldBytes sets the gauge of the bytes the active sagas hold.
func (m *Coordinator) HeldBytes(bytes int64) { m.heldBytes.Set(float64(bytes)) }

// Retried counts a failed saga of sagaType sent back to compensating
// ([coordinator.RetryObserver]).
func (m *Coordinator) Retried(sagaType string) { m.retried.WithLabelValues(sagaType).Inc() }

// Aborted counts an active saga of sagaType an operator's abort rolled
// back ([coordinator.AbortObserver]).
func (m *Coordinator) Aborted(sagaType string) { m.aborted.WithLabelValues(sagaType).Inc() }

// Answered counts a settled step and observes its latency.
func (m *Coordinator) Answered(cmd messages.Command, outcome messages.Outcome, ticks int64, took time.Duration) {
	action := string(cmd.Action)
	m.steps.WithLabelValues(cmd.Saga, cmd.Step, action, string(outcome)).Inc()
	m.ticks.WithLabelValues(cmd.Saga, cmd.Step, action).Observe(float64(ticks))
	if took >= 0 {
		m.seconds.WithLabelValues(cmd.Saga, cmd.Step, action).Observe(took.Seconds())
	}
}

// Defined adds d's series at zero, as [Coordinator.Known] does: a saga
// type registered at run time, or recovered from the bucket, shows from
// the next scrape ([coordinator.DefinitionObserver]).
func (m *Coordinator) Defined(d saga.Definition) { m.Known([]saga.Definition{d}) }

// Known adds the label values of every saga type and final status of
// defs at zero, so that a scrape shows them before anything happened.
func (m *Coordinator) Known(defs []saga.Definition) {
	for _, d := range defs {
		m.started.WithLabelValues(d.Subject)
		m.retried.WithLabelValues(d.Subject)
		m.aborted.WithLabelValues(d.Subject)
		for _, st := range []saga.Status{saga.Completed, saga.RolledBack, saga.TimedOut, saga.Failed} {
			m.finished.WithLabelValues(d.Subject, string(st))
		}
	}
}
