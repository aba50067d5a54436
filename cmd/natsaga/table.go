package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// table returns a tab writer for aligned columns on w; flush it.
func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// clip shortens s to n runes, marking the cut.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printSummary(w io.Writer, s *messages.Summary) {
	t := table(w)
	printf(t, "tick\t%d\n", s.Tick)
	printf(t, "saga types\t%d\n", s.Registered)
	printf(t, "active\t%d\t(awaiting an answer %d, waiting to retry %d)\n", s.Active, s.Awaiting, s.Retrying)
	printf(t, "due\t%d\t(commands due by this tick with no final answer: 0 is quiet)\n", s.Due)
	printf(t, "answered\t%d\t(answers applied in this coordinator's term)\n", s.Answered)
	if s.Refused > 0 {
		printf(t, "refused\t%d\t(answers not from the role owning the step, or not to the command in flight)\n", s.Refused)
	}
	printf(t, "completed\t%d\n", s.Completed)
	printf(t, "rolled back\t%d\n", s.RolledBack)
	printf(t, "timed out\t%d\n", s.TimedOut)
	printf(t, "failed\t%d\n", s.Failed)
	_ = t.Flush()
}

// step names the step x has outstanding, "-" when none.
func step(x *saga.Execution) string {
	if x.Current < 0 || x.Action == "" {
		return "-"
	}
	name := x.LastStep()
	if name == "" {
		name = fmt.Sprintf("step %d", x.Current)
	}
	return fmt.Sprintf("%s %s #%d", x.Action, name, x.Attempt)
}

// startedAt names the status line of the tick x started at, or is to start
// at, and what follows the tick: a scheduled saga aborted before its tick
// never started.
func startedAt(x *saga.Execution) (label, after string) {
	if x.Status == saga.Pending {
		return "scheduled for tick", ""
	}
	started := x.HistoryDropped > 0 || len(x.History) == 0 || x.History[0].Status != saga.Pending
	for _, h := range x.History {
		started = started || h.Status == saga.InProgress
	}
	if !started {
		return "scheduled for tick", " (never started)"
	}
	return "started at tick", ""
}

// printStatus prints the saga state data, as the coordinator sent it, and
// its history; a state it cannot read is printed as it came.
func printStatus(w io.Writer, data json.RawMessage) {
	var x saga.Execution
	if err := json.Unmarshal(data, &x); err != nil {
		printf(w, "saga state not readable: %v\n%s\n", err, data)
		return
	}
	t := table(w)
	printf(t, "saga\t%s\n", x.ID)
	printf(t, "type\t%s\n", x.Saga)
	printf(t, "status\t%s\n", x.Status)
	printf(t, "step\t%s\n", step(&x))
	label, after := startedAt(&x)
	printf(t, "%s\t%d%s\n", label, x.StartedTick, after)
	printf(t, "completed steps\t%s\n", orDash(strings.Join(x.Completed, ", ")))
	if len(x.Compensated) > 0 {
		printf(t, "compensated steps\t%s\n", strings.Join(x.Compensated, ", "))
	}
	if x.Error != "" {
		printf(t, "error\t%s\n", x.Error)
	}
	if len(x.Context) > 0 {
		ctx, _ := json.Marshal(x.Context)
		printf(t, "context\t%s\n", clip(string(ctx), 200))
	}
	_ = t.Flush()
	if x.HistoryDropped > 0 {
		// The coordinator holds a history to its bounds: the first
		// transition is kept, then the latest.
		fmt.Fprintf(w, "\nhistory (%d earlier transitions dropped after the first):\n", x.HistoryDropped)
	} else {
		fmt.Fprintln(w, "\nhistory:")
	}
	t = table(w)
	fmt.Fprintln(t, "TICK\tSTATUS\tSTEP\tACTION\tATTEMPT\tNOTE")
	for _, h := range x.History {
		attempt := "-"
		if h.Attempt > 0 {
			attempt = fmt.Sprint(h.Attempt)
		}
		printf(t, "%d\t%s\t%s\t%s\t%s\t%s\n", h.Tick, h.Status, orDash(h.Step), orDash(string(h.Action)), attempt, clip(h.Note, 80))
	}
	_ = t.Flush()
}

// printList prints the saga states sagas, as the coordinator sent them, a
// row each; a state it cannot read gets a row that says so. more follows
// the count.
func printList(w io.Writer, sagas []json.RawMessage, more string) {
	t := table(w)
	fmt.Fprintln(t, "SAGA_ID\tTYPE\tSTATUS\tSTEP\tSTARTED\tERROR")
	for _, raw := range sagas {
		var x saga.Execution
		if err := json.Unmarshal(raw, &x); err != nil {
			printf(t, "?\t?\t?\t?\t?\tnot readable: %v\n", err)
			continue
		}
		printf(t, "%s\t%s\t%s\t%s\t%d\t%s\n", x.ID, x.Saga, x.Status, step(&x), x.StartedTick, orDash(clip(x.Error, 60)))
	}
	_ = t.Flush()
	fmt.Fprintln(w, count(len(sagas), "saga")+more)
}

func printRetry(w io.Writer, st saga.Status) {
	printf(w, "retrying the compensation: the saga is %s again\n", st)
}

func printAbort(w io.Writer, a client.Aborted) {
	switch {
	case a.Unchanged:
		printf(w, "not aborted: the saga is %s already, and keeps its reason\n", a.Status)
	case a.Status == saga.Compensating:
		printf(w, "aborted: the saga is compensating its completed steps, and the one in flight\n")
	default:
		printf(w, "aborted: the saga is %s\n", a.Status)
	}
}

func printStart(w io.Writer, s client.Started) {
	if s.Existed {
		printf(w, "saga %s: %s (there already: this start started nothing, and its context was not used)\n", s.ID, s.Status)
		return
	}
	printf(w, "saga %s: %s\n", s.ID, s.Status)
}

// printTick prints the clock's answer to a tick to asked; a clock past
// asked stays where it is, and says so.
func printTick(w io.Writer, a *messages.TickAck, asked int64) {
	printf(w, "tick %d", a.Tick)
	if a.Tick > asked {
		printf(w, " (the clock was past tick %d already: it does not go back)", asked)
	}
	// Expired names the first 1,000; ExpiredCount counts them all.
	if n := max(a.ExpiredCount, len(a.Expired)); n > 0 {
		printf(w, ": %s timed out", count(n, "saga"))
	}
	fmt.Fprintln(w)
	if a.Summary != nil {
		printSummary(w, a.Summary)
	}
}

// count returns n and noun, in the plural unless n is 1: "1 saga",
// "2 sagas".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
