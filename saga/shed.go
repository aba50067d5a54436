package saga

import (
	"fmt"
	"unicode/utf8"
)

// OutputsShed is the note of the transition [Execution.Shed] records when
// it drops a saga's step outputs.
const OutputsShed = "step outputs dropped: the saga's state did not fit one message of the server"

// ShedError is how many bytes a saga's error takes at most once
// [Execution.Shed] has cut it: its start, and how long it was.
const ShedError = 256

// Shed drops one part of x's state that the saga can do without, for a
// state too large for the one message it is stored in. Each part is held
// to its own bound (the context, the steps' outputs, the history, the
// steps' names), yet under a small payload limit the parts can add up to
// more than a message: the names, the reasons and the context may be
// escaped up to six-fold in JSON, and the step results' keys are on no
// budget. Called again, Shed drops the next part:
//
//  1. the history but its first transition, the one that says why the
//     saga rolled back and its last (counted in HistoryDropped);
//  2. the steps' outputs (what they merged into the context stays), with
//     a transition noting it ([OutputsShed]);
//  3. its error, but its start ([ShedError]).
//
// It reports false when nothing is left to drop. What it drops depends on
// x alone, so a run stays reproducible.
func (x *Execution) Shed() bool {
	if kept := x.essentialHistory(); len(kept) < len(x.History) {
		x.HistoryDropped += len(x.History) - len(kept)
		x.History = kept
		x.historyKnown = false
		return true
	}
	if len(x.Results) > 0 {
		x.Results, x.resultsKnown = nil, false
		t := Transition{Status: x.Status, Note: OutputsShed}
		if n := len(x.History); n > 0 {
			t.Tick = x.History[n-1].Tick
		}
		x.History = append(x.History, t)
		x.historyKnown = false
		return true
	}
	if len(x.Error) > ShedError {
		suffix := fmt.Sprintf("… (%d bytes)", len(x.Error))
		cut := ShedError - len(suffix)
		for cut > 0 && !utf8.RuneStart(x.Error[cut]) {
			cut--
		}
		x.Error = x.Error[:cut] + suffix
		return true
	}
	return false
}

// essentialHistory returns x's history reduced to its first transition,
// the one [Execution.rollbackReason] reads and its last, in order.
func (x *Execution) essentialHistory() []Transition {
	n := len(x.History)
	if n <= 2 {
		return x.History
	}
	kept := []Transition{x.History[0]}
	for i := 1; i < n-1; i++ {
		if t := x.History[i]; t.Status == Compensating && t.Step == "" {
			kept = append(kept, t)
			break
		}
	}
	return append(kept, x.History[n-1])
}
