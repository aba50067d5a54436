// Command reportcheck checks a floodsim JSON report, as the compose test
// (.ci/compose-test.sh) does, with nothing but Go: the invariants held;
// every planned saga reached a terminal status, none failed and none was
// lost; each ledger's spending adds up to what left it; for each -spread
// role=N, at least N agents of role handled commands; and, with -metrics,
// that the coordinators' Prometheus metrics count the report's sagas.
//
// Usage:
//
//	go run ./deploy/reportcheck [-spread household=4] [-metrics host:port ...] report.json
//
// It prints the sagas and the agents' counts, then "report ok" or the
// problems found. The exit code is 0 when the report passes, 1 when it
// does not, and 2 for bad usage or an unreadable report.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// report is the part of floodsim's JSON report reportcheck reads.
type report struct {
	Sagas      map[string]map[string]int `json:"sagas"`
	Agents     []messages.AgentStats     `json:"agents"`
	Invariants struct {
		OK         bool     `json:"ok"`
		Violations []string `json:"violations"`
	} `json:"invariants"`
	Planned     map[string]int                `json:"planned"`
	Ledgers     map[string]flood.LedgerChange `json:"ledgers"`
	Aborted     string                        `json:"aborted"`
	StartErrors []string                      `json:"start_errors"`
}

// spread is the -spread flag: the least number of busy agents per role.
type spread map[string]int

func (s spread) String() string {
	var parts []string
	for role, n := range s {
		parts = append(parts, role+"="+strconv.Itoa(n))
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

func (s spread) Set(v string) error {
	role, n, ok := strings.Cut(v, "=")
	count, err := strconv.Atoi(n)
	if !ok || role == "" || err != nil || count < 1 {
		return fmt.Errorf("want ROLE=N with N at least 1, got %q", v)
	}
	s[role] = count
	return nil
}

func main() { os.Exit(mainCode(os.Args[1:], os.Stdout, os.Stderr)) }

func mainCode(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reportcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	want := spread{}
	fs.Var(want, "spread", "ROLE=N: at least N agents of ROLE must have handled commands (repeatable)")
	var metricURLs urls
	fs.Var(&metricURLs, "metrics", "HOST:PORT or URL of a coordinator's metrics: the sagas started and finished, summed over every -metrics, must be the report's (repeatable)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: reportcheck [-spread ROLE=N] [-metrics HOST:PORT] report.json")
		return 2
	}
	data, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "reportcheck:", err)
		return 2
	}
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		fmt.Fprintf(stderr, "reportcheck: %s: %v\n", fs.Arg(0), err)
		return 2
	}
	summarize(stdout, &r)
	problems := check(&r, want)
	if len(metricURLs) > 0 {
		problems = append(problems, checkMetrics(context.Background(), &r, metricURLs)...)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stdout, "FAIL:", p)
		}
		return 1
	}
	fmt.Fprintln(stdout, "report ok")
	return 0
}

// summarize prints the sagas by type and status and each agent's count of
// handled commands.
func summarize(w io.Writer, r *report) {
	for _, typ := range sortedKeys(r.Planned) {
		fmt.Fprintf(w, "sagas %-10s planned %5d", typ, r.Planned[typ])
		for _, st := range sortedKeys(r.Sagas[typ]) {
			fmt.Fprintf(w, "  %s %d", st, r.Sagas[typ][st])
		}
		fmt.Fprintln(w)
	}
	for _, a := range r.Agents {
		fmt.Fprintf(w, "agent %-10s %-24s handled %6d\n", a.Role, a.Agent, a.Handled)
	}
}

// check returns what is wrong with r, nothing when it passes.
func check(r *report, want spread) []string {
	var problems []string
	if !r.Invariants.OK || len(r.Invariants.Violations) > 0 {
		problems = append(problems, fmt.Sprintf("invariants violated: %s", strings.Join(r.Invariants.Violations, "; ")))
	}
	if r.Aborted != "" {
		problems = append(problems, "run aborted: "+r.Aborted)
	}
	if len(r.StartErrors) > 0 {
		problems = append(problems, fmt.Sprintf("%d starts never confirmed", len(r.StartErrors)))
	}
	if len(r.Planned) == 0 {
		problems = append(problems, "no sagas planned")
	}
	for _, typ := range sortedKeys(r.Planned) {
		terminal := 0
		for st, n := range r.Sagas[typ] {
			s := saga.Status(st)
			switch {
			case s == saga.Failed && n > 0:
				problems = append(problems, fmt.Sprintf("%s: %d sagas failed", typ, n))
			case !s.Terminal() && n > 0:
				problems = append(problems, fmt.Sprintf("%s: %d sagas %s, not finished", typ, n, st))
			}
			if s.Terminal() {
				terminal += n
			}
		}
		if terminal != r.Planned[typ] {
			problems = append(problems, fmt.Sprintf("%s: %d sagas planned, %d finished", typ, r.Planned[typ], terminal))
		}
	}
	for _, name := range sortedKeys(r.Ledgers) {
		after := r.Ledgers[name].After
		var spent int64
		for _, v := range after.Spent {
			spent += v
		}
		if after.Balance < 0 || after.Initial-after.Balance != spent {
			problems = append(problems, fmt.Sprintf("ledger %s does not balance: initial %d - balance %d != spent %d",
				name, after.Initial, after.Balance, spent))
		}
	}
	for _, role := range sortedKeys(want) {
		busy := 0
		for _, a := range r.Agents {
			if a.Role == role && a.Handled > 0 {
				busy++
			}
		}
		if busy < want[role] {
			problems = append(problems, fmt.Sprintf("%d %s agents handled commands, want at least %d", busy, role, want[role]))
		}
	}
	return problems
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
