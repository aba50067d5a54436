package saga

import (
	"fmt"
	"slices"
	"strings"

	"github.com/natsaga/natsaga/internal/wirejson"
)

// AppendJSON appends x's JSON encoding, the bytes json.Marshal(x) returns,
// to dst, without reflection: the coordinator stores every changed saga
// this way. It returns an error when a context value is not valid JSON or
// RetryAt cannot be encoded.
func (x *Execution) AppendJSON(dst []byte) ([]byte, error) {
	var err error
	dst = append(dst, `{"saga_id":`...)
	dst = wirejson.AppendString(dst, x.ID)
	dst = append(dst, `,"definition":`...)
	dst = wirejson.AppendString(dst, x.Definition)
	dst = append(dst, `,"saga":`...)
	dst = wirejson.AppendString(dst, x.Saga)
	dst = append(dst, `,"status":`...)
	dst = wirejson.AppendString(dst, string(x.Status))
	if x.Cause != "" {
		dst = append(dst, `,"cause":`...)
		dst = wirejson.AppendString(dst, string(x.Cause))
	}
	dst = append(dst, `,"context":`...)
	if dst, err = wirejson.AppendRawMap(dst, x.Context); err != nil {
		return dst, fmt.Errorf("encode saga %s context: %w", x.ID, err)
	}
	dst = append(dst, `,"current_step":`...)
	dst = wirejson.AppendInt(dst, int64(x.Current))
	if x.Action != "" {
		dst = append(dst, `,"action":`...)
		dst = wirejson.AppendString(dst, string(x.Action))
	}
	if x.Attempt != 0 {
		dst = append(dst, `,"attempt":`...)
		dst = wirejson.AppendInt(dst, int64(x.Attempt))
	}
	dst = append(dst, `,"seq":`...)
	dst = wirejson.AppendInt(dst, int64(x.Seq))
	if x.Rank != 0 {
		dst = append(dst, `,"rank":`...)
		dst = wirejson.AppendInt(dst, x.Rank)
	}
	if x.Round != 0 {
		dst = append(dst, `,"round":`...)
		dst = wirejson.AppendInt(dst, x.Round)
	}
	dst = append(dst, `,"started_tick":`...)
	dst = wirejson.AppendInt(dst, x.StartedTick)
	dst = append(dst, `,"dispatched_tick":`...)
	dst = wirejson.AppendInt(dst, x.DispatchedTick)
	if x.Awaiting {
		dst = append(dst, `,"awaiting":true`...)
	}
	if x.Working {
		dst = append(dst, `,"working":true`...)
	}
	if x.Until != 0 {
		dst = append(dst, `,"until":`...)
		dst = wirejson.AppendInt(dst, x.Until)
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
			dst = wirejson.AppendString(dst, k)
			dst = append(dst, ':')
			if dst, err = wirejson.AppendRawMap(dst, x.Results[k]); err != nil {
				return dst, fmt.Errorf("encode saga %s result of %s: %w", x.ID, k, err)
			}
		}
		dst = append(dst, '}')
	}
	if x.Error != "" {
		dst = append(dst, `,"error":`...)
		dst = wirejson.AppendString(dst, x.Error)
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
			dst = x.History[i].appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}'), nil
}

func (t *Transition) appendJSON(dst []byte) []byte {
	dst = append(dst, `{"tick":`...)
	dst = wirejson.AppendInt(dst, t.Tick)
	dst = append(dst, `,"status":`...)
	dst = wirejson.AppendString(dst, string(t.Status))
	if t.Step != "" {
		dst = append(dst, `,"step":`...)
		dst = wirejson.AppendString(dst, t.Step)
	}
	if t.Action != "" {
		dst = append(dst, `,"action":`...)
		dst = wirejson.AppendString(dst, string(t.Action))
	}
	if t.Attempt != 0 {
		dst = append(dst, `,"attempt":`...)
		dst = wirejson.AppendInt(dst, int64(t.Attempt))
	}
	if t.Note != "" {
		dst = append(dst, `,"note":`...)
		dst = wirejson.AppendString(dst, t.Note)
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
		dst = wirejson.AppendString(dst, s)
	}
	return append(dst, ']')
}
