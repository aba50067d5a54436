package wirejson

import (
	"fmt"
	"time"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

var transitionCodec = newCodec(
	integer64("Tick", func(t *saga.Transition) *int64 { return &t.Tick }),
	named("Status", func(t *saga.Transition) *saga.Status { return &t.Status }),
	str("Step", func(t *saga.Transition) *string { return &t.Step }),
	named("Action", func(t *saga.Transition) *messages.Action { return &t.Action }),
	integer("Attempt", func(t *saga.Transition) *int { return &t.Attempt }),
	str("Note", func(t *saga.Transition) *string { return &t.Note }),
)

// executionCodec encodes and decodes a saga; endedCodec decodes only what
// a report of ended sagas reads (see [DecodeEnded]).
var (
	executionCodec = newExecutionCodec(decodeResults, decodeHistory)
	endedCodec     = newExecutionCodec(nil, decodeLastTransition)
)

// newExecutionCodec returns the codec of a saga whose step results and
// history decode with results and history (nil: skipped).
func newExecutionCodec(results, history func(*Decoder, *saga.Execution) error) *codec[saga.Execution] {
	return newCodec(
		named("ID", func(x *saga.Execution) *saga.ID { return &x.ID }),
		str("Definition", func(x *saga.Execution) *string { return &x.Definition }),
		integer64("Version", func(x *saga.Execution) *int64 { return &x.Version }),
		str("Saga", func(x *saga.Execution) *string { return &x.Saga }),
		named("Status", func(x *saga.Execution) *saga.Status { return &x.Status }),
		named("Cause", func(x *saga.Execution) *saga.Status { return &x.Cause }),
		rawMap("Context", func(x *saga.Execution) *messages.Context { return &x.Context }),
		integer("Current", func(x *saga.Execution) *int { return &x.Current }),
		named("Action", func(x *saga.Execution) *messages.Action { return &x.Action }),
		integer("Attempt", func(x *saga.Execution) *int { return &x.Attempt }),
		integer("Seq", func(x *saga.Execution) *int { return &x.Seq }),
		integer64("Rank", func(x *saga.Execution) *int64 { return &x.Rank }),
		integer64("Round", func(x *saga.Execution) *int64 { return &x.Round }),
		integer64("StartedTick", func(x *saga.Execution) *int64 { return &x.StartedTick }),
		integer64("DispatchedTick", func(x *saga.Execution) *int64 { return &x.DispatchedTick }),
		boolean("Awaiting", func(x *saga.Execution) *bool { return &x.Awaiting }),
		boolean("Working", func(x *saga.Execution) *bool { return &x.Working }),
		integer64("Until", func(x *saga.Execution) *int64 { return &x.Until }),
		instant("RetryAt", func(x *saga.Execution) *time.Time { return &x.RetryAt }),
		stringList("Completed", func(x *saga.Execution) *[]string { return &x.Completed }),
		stringList("Compensated", func(x *saga.Execution) *[]string { return &x.Compensated }),
		binding[saga.Execution]{goName: "Results", enc: appendResults, dec: results, empty: func(x *saga.Execution) bool { return len(x.Results) == 0 }},
		str("Error", func(x *saga.Execution) *string { return &x.Error }),
		binding[saga.Execution]{goName: "History", enc: appendHistory, dec: history},
		integer("HistoryDropped", func(x *saga.Execution) *int { return &x.HistoryDropped }),
	)
}

var outcomeCodec = newCodec(
	named("ID", func(o *saga.OutcomeLine) *saga.ID { return &o.ID }),
	str("Saga", func(o *saga.OutcomeLine) *string { return &o.Saga }),
	integer64("Rank", func(o *saga.OutcomeLine) *int64 { return &o.Rank }),
	named("Status", func(o *saga.OutcomeLine) *saga.Status { return &o.Status }),
	str("Reason", func(o *saga.OutcomeLine) *string { return &o.Reason }),
	integer64("StartTick", func(o *saga.OutcomeLine) *int64 { return &o.StartTick }),
	integer64("EndTick", func(o *saga.OutcomeLine) *int64 { return &o.EndTick }),
	stringList("Completed", func(o *saga.OutcomeLine) *[]string { return &o.Completed }),
	stringList("Compensated", func(o *saga.OutcomeLine) *[]string { return &o.Compensated }),
	rawMap("Context", func(o *saga.OutcomeLine) *messages.Context { return &o.Context }),
)

// AppendOutcomeLine appends o's JSON encoding, the bytes json.Marshal(o)
// returns, to dst, without reflection: a line of an outcome log
// (saga.OutcomeLogWith). It returns an error when a context value is not
// valid JSON.
func AppendOutcomeLine(dst []byte, o *saga.OutcomeLine) ([]byte, error) {
	dst, err := outcomeCodec.append(dst, o)
	if err != nil {
		return dst, fmt.Errorf("encode the outcome of %s: %w", o.ID, err)
	}
	return dst, nil
}

// DecodeExecution reads a stored saga, one JSON object and nothing after
// it, into what json.Unmarshal makes of it, without reflection: a
// coordinator reads every stored saga when it starts, and a report reads
// every saga of a run. It returns an error wrapping [ErrSyntax] or
// [ErrType] where json.Unmarshal returns one.
func DecodeExecution(data []byte) (saga.Execution, error) {
	x, err := executionCodec.decodeAll(data)
	if err != nil {
		return saga.Execution{}, fmt.Errorf("decode saga: %w", err)
	}
	return x, nil
}

// DecodeEnded reads a stored saga as [DecodeExecution] does, but for its
// step results, skipped, and its history, of which it keeps the last
// transition (the tick the saga ended at, for its outcome line): what a
// report of many ended sagas reads, at less cost in time and memory.
func DecodeEnded(data []byte) (saga.Execution, error) {
	x, err := endedCodec.decodeAll(data)
	if err != nil {
		return saga.Execution{}, fmt.Errorf("decode saga: %w", err)
	}
	return x, nil
}

// decodeLastTransition reads x's history, keeping the last transition:
// the others are only checked to be JSON, and the last is decoded (at
// 100,000 households, decoding every transition took about half of the
// CPU a report spent decoding the bucket).
func decodeLastTransition(d *Decoder, x *saga.Execution) error {
	if d.Null() {
		x.History = nil
		return nil
	}
	var last []byte
	err := d.Array(func() (err error) {
		last, err = d.Raw()
		return err
	})
	if err != nil {
		return err
	}
	x.History = []saga.Transition{}
	if last == nil {
		return nil
	}
	var t saga.Transition
	if err := transitionCodec.decode(NewDecoder(last), &t); err != nil {
		return d.fail(err)
	}
	x.History = append(x.History, t)
	return nil
}

// decodeResults reads x's step results, as encoding/json decodes a map:
// null sets it to nil, an object adds its members.
func decodeResults(d *Decoder, x *saga.Execution) error { return decodeContextMap(d, &x.Results) }

// decodeHistory reads x's history.
func decodeHistory(d *Decoder, x *saga.Execution) error {
	return list(d, &x.History, func(t *saga.Transition) error { return transitionCodec.decode(d, t) })
}

// AppendExecution appends x's JSON encoding, the bytes json.Marshal(x)
// returns, to dst, without reflection: the coordinator stores every changed
// saga this way. It returns an error when a context value is not valid JSON
// or RetryAt cannot be encoded.
func AppendExecution(dst []byte, x *saga.Execution) ([]byte, error) {
	dst, err := executionCodec.append(dst, x)
	if err != nil {
		return dst, fmt.Errorf("encode saga %s: %w", x.ID, err)
	}
	return dst, nil
}

// appendResults appends x's step results, keys sorted as encoding/json
// sorts a map's.
func appendResults(dst []byte, x *saga.Execution) ([]byte, error) {
	return appendContextMap(dst, x.Results)
}

// appendHistory appends x's history, null when nil.
func appendHistory(dst []byte, x *saga.Execution) ([]byte, error) {
	if x.History == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, '[')
	for i := range x.History {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst, _ = transitionCodec.append(dst, &x.History[i]) // a transition holds no raw JSON
	}
	return append(dst, ']'), nil
}
