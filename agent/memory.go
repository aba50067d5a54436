package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/natsaga/natsaga/messages"
)

// ErrRedeliver is returned by [Memory.Do] when the command must be
// delivered again rather than answered (see [Wait] and
// [Conclusion.Redeliver]).
var ErrRedeliver = errors.New("deliver the command again")

// Memory is one role's state and barrier records held in memory: the
// barrier of package participant without a server, for tests of handlers
// and of the rules. Commands take turns. It is safe for concurrent use.
// Outputs and state values are held to what a server of NATS's default
// payload limit takes ([MemoryMaxPayload]).
type Memory struct {
	mu      sync.Mutex
	values  map[string]json.RawMessage
	records map[branchKey]messages.Record
	now     func() time.Time
}

type branchKey struct{ sagaID, step string }

// MemoryMaxPayload is the server payload limit [Memory] holds outputs
// and values to ([messages.MaxOutputFor], [messages.MaxValueFor]): NATS's
// default, 1 MiB.
const MemoryMaxPayload = 1 << 20

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{values: map[string]json.RawMessage{}, records: map[branchKey]messages.Record{},
		now: func() time.Time { return time.Now().UTC() }}
}

// Init stores v under key unless key already has a value, and reports
// whether it stored it.
func (m *Memory) Init(_ context.Context, key string, v any) (bool, error) {
	if err := messages.CheckKey(key); err != nil {
		return false, err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return false, fmt.Errorf("init %s: %w", key, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.values[key]; ok {
		return false, nil
	}
	m.values[key] = data
	return true, nil
}

// Value decodes the committed state value key into v, and reports false
// when key has none.
func (m *Memory) Value(key string, v any) (bool, error) {
	if err := messages.CheckKey(key); err != nil {
		return false, err
	}
	m.mu.Lock()
	data, ok := m.values[key]
	m.mu.Unlock()
	if !ok {
		return false, nil
	}
	return true, json.Unmarshal(data, v)
}

// Values decodes the value of each of keys into value(i), as [Memory.Value]
// does, and reports which keys have one: the shape of a state query's read
// (participant.QueryFunc).
func (m *Memory) Values(keys []string, value func(i int) any) ([]bool, error) {
	found := make([]bool, len(keys))
	for i, key := range keys {
		var err error
		if found[i], err = m.Value(key, value(i)); err != nil {
			return nil, err
		}
	}
	return found, nil
}

// Record returns the barrier record of step of saga sagaID (the zero
// record when there is none).
func (m *Memory) Record(sagaID, step string) messages.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.records[branchKey{sagaID, step}]
}

// Do runs cmd's action through the barrier with h, and returns the reply to
// send and how the command was disposed of. It returns an error wrapping
// [ErrRedeliver] when the command must be delivered again unanswered, and
// one wrapping [messages.ErrBadRequest], with nothing run or recorded, when
// cmd's saga id, step or action is malformed or h lacks an action: what
// the runtime never lets through to a store.
func (m *Memory) Do(ctx context.Context, cmd *messages.Command, h Handler) (messages.Reply, Verdict, error) {
	if err := errors.Join(messages.CheckToken("saga_id", cmd.SagaID), messages.CheckToken("step", cmd.Step)); err != nil {
		return messages.Reply{}, Transient, err
	}
	if !cmd.Action.Valid() {
		return messages.Reply{}, Transient, fmt.Errorf("command action %q: %w", cmd.Action, messages.ErrBadRequest)
	}
	if err := h.Validate(); err != nil {
		return messages.Reply{}, Transient, fmt.Errorf("step %s: %w", cmd.Step, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	key := branchKey{cmd.SagaID, cmd.Step}
	rec := m.records[key]
	mine := &rec.Execute
	if cmd.Action == messages.Compensate {
		mine = &rec.Compensate
	}
	switch Decide(rec, cmd.Action) {
	case Answer:
		return (*mine).Reply(cmd), Duplicate, nil
	case Refuse:
		return Refusal(cmd), Refused, nil
	case Wait:
		return messages.Reply{}, Transient, fmt.Errorf("compensate %s/%s: its execute is pending: %w", cmd.SagaID, cmd.Step, ErrRedeliver)
	case NothingToUndo:
		*mine = NoopResult(cmd, m.now())
		m.records[key] = rec
		return (*mine).Reply(cmd), Noop, nil
	}
	tx := &memTx{values: m.values, writes: map[string]json.RawMessage{}}
	out, err := h.Run(ctx, tx, cmd)
	c := Conclude(cmd, out, err, *mine != nil, m.now(), messages.MaxOutputFor(MemoryMaxPayload))
	switch {
	case c.Redeliver:
		return messages.Reply{}, Transient, fmt.Errorf("%s %s/%s: %w: %w", cmd.Action, cmd.SagaID, cmd.Step, ErrRedeliver, err)
	case c.Result == nil:
		return c.Reply, Transient, nil
	}
	if c.Keep && len(tx.writes) > 1 {
		// Nothing is recorded, as in the JetStream store.
		err := fmt.Errorf("%s %s writes %d values: %w", cmd.Action, cmd.Step, len(tx.writes), ErrTooManyWrites)
		return messages.ReplyTo(cmd, messages.Error, err.Error()), Transient, nil
	}
	if c.Keep {
		for k, v := range tx.writes {
			m.values[k] = v
		}
	}
	*mine = c.Result
	m.records[key] = rec
	return c.Result.Reply(cmd), Applied, nil
}

// memTx is a transaction of [Memory]: it reads the committed values and
// keeps its writes apart until the command commits.
type memTx struct {
	values map[string]json.RawMessage
	read   map[string]bool
	writes map[string]json.RawMessage
}

func (tx *memTx) Get(key string, v any) (bool, error) {
	if err := messages.CheckKey(key); err != nil {
		return false, err
	}
	if tx.read == nil {
		tx.read = map[string]bool{}
	}
	tx.read[key] = true
	data, ok := tx.writes[key]
	if !ok {
		data, ok = tx.values[key]
	}
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("state %s: %w", key, err)
	}
	return true, nil
}

func (tx *memTx) Put(key string, v any) error {
	if err := messages.CheckKey(key); err != nil {
		return err
	}
	if !tx.read[key] {
		return fmt.Errorf("put %s: read it with Get first", key)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if err := CheckValue(key, data, MemoryMaxPayload); err != nil {
		return err
	}
	tx.writes[key] = data
	return nil
}
