package foreign_test

// This file is a natsaga agent written the way an author with only a NATS
// client would write it, following docs/protocol.md: it imports nats.go,
// its jetstream package and the standard library, and no natsaga package
// (TestForeignAgentImportsNoNatsaga checks that). It serves one step, the
// household's application in the subsidy saga.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names from docs/protocol.md.
const (
	commandStream = "NATSAGA_COMMANDS"
	maxPayload    = 256 << 10
	sagaType      = "subsidy"
	stepName      = "household_applies"
)

// command is the Command payload.
type command struct {
	V       int                        `json:"v"`
	SagaID  string                     `json:"saga_id"`
	Saga    string                     `json:"saga"`
	Step    string                     `json:"step"`
	Action  string                     `json:"action"`
	Attempt int                        `json:"attempt"`
	Seq     int                        `json:"seq"`
	Tick    int64                      `json:"tick"`
	Context map[string]json.RawMessage `json:"context"`
}

// reply is the Reply payload.
type reply struct {
	V       int            `json:"v"`
	SagaID  string         `json:"saga_id"`
	Saga    string         `json:"saga"`
	Step    string         `json:"step"`
	Action  string         `json:"action"`
	Attempt int            `json:"attempt"`
	Seq     int            `json:"seq"`
	Outcome string         `json:"outcome"`
	Reason  string         `json:"reason,omitempty"`
	Output  map[string]any `json:"output,omitempty"`
	Agent   string         `json:"agent,omitempty"`
}

// record is the agent's idempotency record of one (saga_id, step): the
// recorded execute, and whether the compensation ran.
type record struct {
	executed    *reply
	compensated bool
}

// householdAgent keeps its state in memory: the applications by saga id,
// and its records. A mutex makes each effect and its record one atomic
// change.
type householdAgent struct {
	name string
	js   jetstream.JetStream

	mu           sync.Mutex
	records      map[string]*record
	applications map[string]string
	handled      int
	dropped      int
	// tick is the current tick the agent learned when it started.
	tick int64
}

// createConsumer sends the consumer-create request of docs/protocol.md
// ("The consumer of a role", raw request) and checks the answer.
func createConsumer(ctx context.Context, nc *nats.Conn) error {
	req := map[string]any{
		"stream_name": commandStream,
		"action":      "",
		"config": map[string]any{
			"durable_name": "agent-household",
			"filter_subjects": []string{
				"saga." + sagaType + "." + stepName,
				"saga." + sagaType + "." + stepName + ".compensate",
			},
			"ack_policy":      "explicit",
			"ack_wait":        int64(5 * time.Second),
			"max_deliver":     -1,
			"deliver_policy":  "all",
			"max_ack_pending": 8192,
		},
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	m, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.CREATE."+commandStream+".agent-household", data)
	if err != nil {
		return err
	}
	var resp struct {
		Name  string `json:"name"`
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return err
	}
	if resp.Error != nil {
		return fmt.Errorf("consumer create: %d %s", resp.Error.Code, resp.Error.Description)
	}
	if resp.Name != "agent-household" {
		return fmt.Errorf("consumer create: answered for %q", resp.Name)
	}
	return nil
}

// currentTick asks the coordinator's summary for the current tick. The
// command stream exists before a coordinator serves (and while none is
// active, in a takeover), so a summary that meets no responders is asked
// again after a pause.
func currentTick(ctx context.Context, nc *nats.Conn) (int64, error) {
	var m *nats.Msg
	for {
		var err error
		m, err = nc.RequestWithContext(ctx, "natsaga.summary", []byte(`{"v":1}`))
		if err == nil {
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	var s struct {
		Tick *int64 `json:"tick"`
	}
	if err := json.Unmarshal(m.Data, &s); err != nil || s.Tick == nil {
		return 0, fmt.Errorf("summary without a tick: %s", m.Data)
	}
	return *s.Tick, nil
}

func newHouseholdAgent(name string) *householdAgent {
	return &householdAgent{name: name, records: map[string]*record{}, applications: map[string]string{}}
}

// run serves commands until ctx ends.
func (a *householdAgent) run(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	a.js = js
	// 1. Wait for the coordinator's command stream.
	for {
		_, err := js.Stream(ctx, commandStream)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// 2. The role's durable consumer: agent-<role>, the execute and
	// compensate subjects of every step served, explicit acks; created
	// with the raw JetStream request docs/protocol.md spells out, as a
	// client without multi-filter consumers does.
	if err := createConsumer(ctx, nc); err != nil {
		return err
	}
	cons, err := js.Consumer(ctx, commandStream, "agent-household")
	if err != nil {
		return err
	}
	// 2b. Learn the current tick, as an agent that starts mid-run does.
	tick, err := currentTick(ctx, nc)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.tick = tick
	a.mu.Unlock()
	// 3. Pull and handle.
	cc, err := cons.Consume(func(m jetstream.Msg) { a.handle(ctx, m) })
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	<-cc.Closed()
	return nil
}

func isToken(s string) bool { return s != "" && !strings.ContainsAny(s, ".*> \t\r\n") }

// check reports why c, delivered on subject, is malformed ("" if it is not).
func check(c *command, subject string) string {
	switch {
	case c.V != 1:
		return "version"
	case !isToken(c.SagaID) || !isToken(c.Saga) || !isToken(c.Step):
		return "tokens"
	case c.Action != "execute" && c.Action != "compensate":
		return "action"
	case c.Attempt < 1 || c.Seq < 1:
		return "attempt or seq"
	}
	want := "saga." + c.Saga + "." + c.Step
	if c.Action == "compensate" {
		want += ".compensate"
	}
	if subject != want || c.Saga != sagaType || c.Step != stepName {
		return "subject"
	}
	return ""
}

func (a *householdAgent) handle(ctx context.Context, m jetstream.Msg) {
	var c command
	if len(m.Data()) > maxPayload {
		a.drop(m, "too large")
		return
	}
	if err := json.Unmarshal(m.Data(), &c); err != nil {
		a.drop(m, err.Error())
		return
	}
	if why := check(&c, m.Subject()); why != "" {
		a.drop(m, why)
		return
	}
	r := a.decide(&c)
	data, err := json.Marshal(r)
	if err != nil {
		a.drop(m, err.Error())
		return
	}
	// Reply into JetStream and wait for the ack; only then ack the command.
	// No Nats-Msg-Id (protocol.md): a seq asked again after a coordinator
	// restart must be answered again, not deduplicated.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := a.js.Publish(pctx, "natsaga.reply."+c.Saga+"."+c.Step, data); err != nil {
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
	a.mu.Lock()
	a.handled++
	a.mu.Unlock()
}

// decide applies the barrier rules and the step's effect, atomically.
func (a *householdAgent) decide(c *command) reply {
	r := reply{V: 1, SagaID: c.SagaID, Saga: c.Saga, Step: c.Step, Action: c.Action,
		Attempt: c.Attempt, Seq: c.Seq, Agent: a.name}
	a.mu.Lock()
	defer a.mu.Unlock()
	key := c.SagaID + "/" + c.Step
	rec := a.records[key]
	if rec == nil {
		rec = &record{}
		a.records[key] = rec
	}
	if c.Action == "compensate" {
		if !rec.compensated && rec.executed != nil && rec.executed.Outcome == "ok" {
			a.applications[c.SagaID] = "cancelled"
		}
		rec.compensated = true // also when there was nothing to undo
		r.Outcome = "ok"
		return r
	}
	switch {
	case rec.compensated:
		r.Outcome, r.Reason = "failed", "refused: the step's compensation came first; this execute is late"
	case rec.executed != nil:
		r.Outcome, r.Reason, r.Output = rec.executed.Outcome, rec.executed.Reason, rec.executed.Output
	default:
		var household string
		if err := json.Unmarshal(c.Context["household_id"], &household); err != nil || !isToken(household) {
			r.Outcome, r.Reason = "failed", "bad household_id"
		} else {
			a.applications[c.SagaID] = "pending"
			r.Outcome = "ok"
			r.Output = map[string]any{"application_status": "pending", "applied_via": a.name}
		}
		rec.executed = &reply{Outcome: r.Outcome, Reason: r.Reason, Output: r.Output}
	}
	return r
}

func (a *householdAgent) drop(m jetstream.Msg, why string) {
	log.Printf("foreign household: dropping malformed command on %s: %s", m.Subject(), why)
	_ = m.Term()
	a.mu.Lock()
	a.dropped++
	a.mu.Unlock()
}

func (a *householdAgent) application(sagaID string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applications[sagaID]
}
