package wirejson

import (
	"fmt"
	"slices"
	"strings"

	"github.com/natsaga/natsaga/saga"
)

// AppendExecution appends x's JSON encoding, the bytes json.Marshal(x) returns,
// to dst, without reflection: the coordinator stores every changed saga
// this way. It returns an error when a context value is not valid JSON or
// RetryAt cannot be encoded.
func AppendExecution(dst []byte, x *saga.Execution) ([]byte, error) {
	var err error
	dst = append(dst, `{"saga_id":`...)
	dst = AppendString(dst, x.ID)
	dst = append(dst, `,"definition":`...)
	dst = AppendString(dst, x.Definition)
	dst = append(dst, `,"saga":`...)
	dst = AppendString(dst, x.Saga)
	dst = append(dst, `,"status":`...)
	dst = AppendString(dst, string(x.Status))
	if x.Cause != "" {
		dst = append(dst, `,"cause":`...)
		dst = AppendString(dst, string(x.Cause))
	}
	dst = append(dst, `,"context":`...)
	if dst, err = AppendRawMap(dst, x.Context); err != nil {
		return dst, fmt.Errorf("encode saga %s context: %w", x.ID, err)
	}
	dst = append(dst, `,"current_step":`...)
	dst = AppendInt(dst, int64(x.Current))
	if x.Action != "" {
		dst = append(dst, `,"action":`...)
		dst = AppendString(dst, string(x.Action))
	}
	if x.Attempt != 0 {
		dst = append(dst, `,"attempt":`...)
		dst = AppendInt(dst, int64(x.Attempt))
	}
	dst = append(dst, `,"seq":`...)
	dst = AppendInt(dst, int64(x.Seq))
	if x.Rank != 0 {
		dst = append(dst, `,"rank":`...)
		dst = AppendInt(dst, x.Rank)
	}
	if x.Round != 0 {
		dst = append(dst, `,"round":`...)
		dst = AppendInt(dst, x.Round)
	}
	dst = append(dst, `,"started_tick":`...)
	dst = AppendInt(dst, x.StartedTick)
	dst = append(dst, `,"dispatched_tick":`...)
	dst = AppendInt(dst, x.DispatchedTick)
	if x.Awaiting {
		dst = append(dst, `,"awaiting":true`...)
	}
	if x.Working {
		dst = append(dst, `,"working":true`...)
	}
	if x.Until != 0 {
		dst = append(dst, `,"until":`...)
		dst = AppendInt(dst, x.Until)
	}
	if !x.RetryAt.IsZero() {
		t, err := x.RetryAt.MarshalJSON()
		if err != nil {
			return dst, fmt.Errorf("encode saga %s retry_at: %w", x.ID, err)
		}
		dst = append(dst, `,"retry_at":`...)
		dst = append(dst, t...)
	}
	dst = append(dst, `,"completed_steps":`...)
	dst = appendStrings(dst, x.Completed)
	if len(x.Compensated) > 0 {
		dst = append(dst, `,"compensated_steps":`...)
		dst = appendStrings(dst, x.Compensated)
	}
	if len(x.Results) > 0 {
		dst = append(dst, `,"step_results":{`...)
		var arr [8]string
		steps := arr[:0]
		for k := range x.Results {
			steps = append(steps, k)
		}
		slices.SortFunc(steps, strings.Compare)
		for i, k := range steps {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, k)
			dst = append(dst, ':')
			if dst, err = AppendRawMap(dst, x.Results[k]); err != nil {
				return dst, fmt.Errorf("encode saga %s result of %s: %w", x.ID, k, err)
			}
		}
		dst = append(dst, '}')
	}
	if x.Error != "" {
		dst = append(dst, `,"error":`...)
		dst = AppendString(dst, x.Error)
	}
	dst = append(dst, `,"history":`...)
	if x.History == nil {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '[')
		for i := range x.History {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendTransition(dst, &x.History[i])
		}
		dst = append(dst, ']')
	}
	return append(dst, '}'), nil
}

func appendTransition(dst []byte, t *saga.Transition) []byte {
	dst = append(dst, `{"tick":`...)
	dst = AppendInt(dst, t.Tick)
	dst = append(dst, `,"status":`...)
	dst = AppendString(dst, string(t.Status))
	if t.Step != "" {
		dst = append(dst, `,"step":`...)
		dst = AppendString(dst, t.Step)
	}
	if t.Action != "" {
		dst = append(dst, `,"action":`...)
		dst = AppendString(dst, string(t.Action))
	}
	if t.Attempt != 0 {
		dst = append(dst, `,"attempt":`...)
		dst = AppendInt(dst, int64(t.Attempt))
	}
	if t.Note != "" {
		dst = append(dst, `,"note":`...)
		dst = AppendString(dst, t.Note)
	}
	return append(dst, '}')
}

// appendStrings appends ss as encoding/json encodes a []string.
func appendStrings(dst []byte, ss []string) []byte {
	if ss == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '[')
	for i, s := range ss {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, s)
	}
	return append(dst, ']')
}
