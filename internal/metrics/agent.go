package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsaga/natsaga/messages"
)

// agentCollector reads an agent's counters at each scrape.
type agentCollector struct {
	stats func() messages.AgentStats
	descs []counterDesc
}

type counterDesc struct {
	desc  *prometheus.Desc
	value func(*messages.AgentStats) int64
}

// RegisterAgent registers with reg the counters of the agent whose
// statistics stats returns (participant.Agent.Stats), labelled with its
// role and name, read at each scrape. It returns an error when reg has
// metrics of the same names and labels.
func RegisterAgent(reg prometheus.Registerer, stats func() messages.AgentStats) error {
	labels := []string{"role", "agent"}
	d := func(name, help string, v func(*messages.AgentStats) int64) counterDesc {
		return counterDesc{prometheus.NewDesc("natsaga_agent_"+name+"_total", help, labels, nil), v}
	}
	c := &agentCollector{stats: stats, descs: []counterDesc{
		d("commands_handled", "Commands this agent received and answered.", func(s *messages.AgentStats) int64 { return s.Handled }),
		d("command_messages", "Command messages this agent took in: one per command sent alone, one per batch.", func(s *messages.AgentStats) int64 { return s.Messages }),
		d("executed", "Executes that took effect at this agent.", func(s *messages.AgentStats) int64 { return s.Executed }),
		d("compensated", "Compensations that took effect at this agent (nothing to undo included).", func(s *messages.AgentStats) int64 { return s.Compensated }),
		d("duplicates_absorbed", "Commands delivered again that the barrier answered without running them.", func(s *messages.AgentStats) int64 { return s.Duplicates }),
		d("refusals", "Executes refused because their compensation came first.", func(s *messages.AgentStats) int64 { return s.Refused }),
		d("redeliveries", "Commands JetStream delivered to this agent more than once.", func(s *messages.AgentStats) int64 { return s.Redelivered }),
		d("rejected", "Malformed commands dropped.", func(s *messages.AgentStats) int64 { return s.Rejected }),
		d("batches", "Batches of commands a serial role's copy committed together.", func(s *messages.AgentStats) int64 { return s.Batches }),
		d("batched_commands", "Commands run in those batches.", func(s *messages.AgentStats) int64 { return s.Batched }),
		d("record_messages", "Messages this agent wrote to its role's record log.", func(s *messages.AgentStats) int64 { return s.RecordMessages }),
		d("records", "Barrier records in those messages.", func(s *messages.AgentStats) int64 { return s.Records }),
		d("conflicts", "Optimistic retries of this agent's store: commands run again, and messages of records refused, because another copy wrote first.", func(s *messages.AgentStats) int64 { return s.Conflicts }),
	}}
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("agent metrics: %w", err)
	}
	return nil
}

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d.desc
	}
}

func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	for _, d := range c.descs {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.value(&s)), s.Role, s.Agent)
	}
}

// LedgerReader reads a role's ledger balance, in cents.
type LedgerReader func(ctx context.Context) (int64, error)

// ledgerCollector reads a ledger at each scrape.
type ledgerCollector struct {
	desc *prometheus.Desc
	role string
	read LedgerReader
	log  *slog.Logger
}

// ledgerTimeout bounds one read of a ledger during a scrape.
const ledgerTimeout = 2 * time.Second

// RegisterLedger registers with reg the gauge natsaga_ledger_balance_cents
// of role, read by read at each scrape (bounded by two seconds). A read
// that fails leaves the gauge out of that scrape and is logged to log
// (nil: not logged). It returns an error when reg has it already.
func RegisterLedger(reg prometheus.Registerer, role string, read LedgerReader, log *slog.Logger) error {
	c := &ledgerCollector{
		desc: prometheus.NewDesc("natsaga_ledger_balance_cents", "Balance of a flood role's ledger (the government's budget, the insurer's fund), in cents.",
			nil, prometheus.Labels{"role": role}),
		role: role, read: read, log: log,
	}
	if err := reg.Register(c); err != nil {
		return fmt.Errorf("ledger metrics: %w", err)
	}
	return nil
}

func (c *ledgerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *ledgerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ledgerTimeout)
	defer cancel()
	v, err := c.read(ctx)
	if err != nil {
		if c.log != nil {
			c.log.Warn("ledger not read for metrics", "role", c.role, "err", err)
		}
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v))
}
