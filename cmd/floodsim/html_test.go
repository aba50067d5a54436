package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// runSmall runs the small scenario against a coordinator and one agent per
// role in this process, and extra more household agents the run does not
// wait for (-expect-agents 4), writing the JSON and HTML reports into a
// temporary directory, and returns their paths. The coordinator's clock
// is at base when the run begins.
func runSmall(t *testing.T, extra int, base int64) (jsonPath, htmlPath string) {
	t.Helper()
	c, url := inProcessSystem(t)
	if base > 0 {
		testenv.Tick(t, testenv.Connect(t, url), base)
	}
	steps, err := flood.Steps(flood.Household)
	require.NoError(t, err)
	for i := range extra {
		testenv.Agent(t, url, participant.Options{Role: flood.Household, Name: fmt.Sprintf("late-%d", i), Steps: steps, Serial: flood.Serial(flood.Household)})
	}
	dir := t.TempDir()
	c.conn.URL = url
	c.jsonPath, c.htmlPath = filepath.Join(dir, "report.json"), filepath.Join(dir, "report.html")
	var stdout bytes.Buffer
	require.NoError(t, run(context.Background(), c, &stdout, io.Discard), stdout.String())
	require.Contains(t, stdout.String(), "HTML report written to "+c.htmlPath)
	return c.jsonPath, c.htmlPath
}

// chromium returns the path of a Chromium from the system's packages, or
// skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (apt-get install chromium; .ci/run does under CI=true)")
	return ""
}

// TestHTMLReportInChromium writes a run's HTML report and loads it in a
// headless Chromium with no network: the page logs nothing to the console,
// and its script draws every plot, as many elements as the report's data
// asks for.
func TestHTMLReportInChromium(t *testing.T) {
	browser := chromium(t)
	// A clock that does not start at 0: the plots speak of the scenario's
	// ticks all the same.
	const base = 7
	jsonPath, htmlPath := runSmall(t, 0, base)
	page, err := os.ReadFile(htmlPath)
	require.NoError(t, err)
	// Self-contained: nothing is fetched.
	require.NotRegexp(t, `(?i)(src|href)\s*=\s*["']?(https?:)?//`, string(page))
	require.NotContains(t, string(page), "@import")

	data, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var r report
	require.NoError(t, json.Unmarshal(data, &r))
	require.NotEmpty(t, r.PerTick)
	require.NotEmpty(t, r.Timeline)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0",
		"--dump-dom", "file://"+htmlPath)
	var dom, logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &dom, &logs
	require.NoError(t, cmd.Run(), logs.String())
	for _, line := range strings.Split(logs.String(), "\n") {
		require.NotContains(t, line, ":CONSOLE", "the page logged to the console")
	}
	out := dom.String()
	require.Contains(t, out, `data-drawn="yes"`, "the script ran to its end")

	count := func(svgID, pattern string) int {
		i := strings.Index(out, `id="`+svgID+`"`)
		require.NotEqual(t, -1, i, svgID)
		end := strings.Index(out[i:], "</svg>")
		require.NotEqual(t, -1, end, svgID)
		return len(regexp.MustCompile(pattern).FindAllString(out[i:i+end], -1))
	}
	// Per tick: a bar for every non-zero count.
	bars := 0
	prev := tickRow{}
	for _, row := range r.PerTick {
		for _, n := range []int{row.Started, row.Completed - prev.Completed, row.RolledBack - prev.RolledBack,
			row.TimedOut - prev.TimedOut, row.Failed - prev.Failed} {
			if n > 0 {
				bars++
			}
		}
		prev = row
	}
	require.Positive(t, bars)
	require.Equal(t, bars, count("per-tick", `<rect class="bar s-`))
	require.Equal(t, 1, count("ledgers", `<path class="line s-budget" d="M[^"]+L`))
	require.Equal(t, 1, count("ledgers", `<path class="line s-fund" d="M[^"]+L`))
	// From the balances the run found, then one point a tick.
	fund := regexp.MustCompile(`<path class="line s-fund" d="([^"]+)"`).FindStringSubmatch(section(t, out, "ledgers"))
	require.Len(t, fund, 2)
	require.Equal(t, len(r.PerTick)+1, strings.Count(fund[1], " L")+1, fund[1])
	// The timeline: a segment per command, a mark per end.
	segs, ends := 0, 0
	for _, x := range r.Timeline {
		for _, h := range x.History {
			switch {
			case h.Step != "" && h.Action != "":
				segs++
			case h.Status.Terminal():
				ends++
			}
		}
	}
	require.Positive(t, segs)
	require.Equal(t, segs, count("timeline", `<rect class="seg s-(execute|compensate)"`))
	require.Equal(t, ends, count("timeline", `<circle class="end s-`))
	require.Equal(t, len(r.Timeline), ends, "every sampled saga ended")
	require.Positive(t, count("timeline", `<rect class="seg s-compensate"`))
	// Its axis in the scenario's ticks, as the per-tick plot's: from the
	// earliest tick of the sampled sagas' histories, by ones (few ticks
	// here).
	require.Equal(t, base, int(r.PerTick[0].Tick)-r.PerTick[0].T)
	first := r.Timeline[0].History[0].Tick
	for _, x := range r.Timeline {
		for _, h := range x.History {
			first = min(first, h.Tick)
		}
	}
	var axis []float64
	for _, m := range regexp.MustCompile(`<text x="[^"]+" y="12" text-anchor="middle">([^<]+)</text>`).FindAllStringSubmatch(section(t, out, "timeline"), -1) {
		axis = append(axis, number(t, m[1]))
	}
	require.NotEmpty(t, axis)
	require.Equal(t, float64(first-base), axis[0], "axis %v", axis)
	// The agents: a bar per non-zero counter.
	agentBars := 0
	for _, a := range r.Agents {
		for _, n := range []int64{a.Executed, a.Compensated, a.Duplicates, a.Refused} {
			if n > 0 {
				agentBars++
			}
		}
	}
	require.Equal(t, agentBars, count("agents", `<rect class="bar s-`))
	// Each agent's name is on a line above its bars, whatever its length.
	names, nameY := 0, -1.0
	for _, m := range regexp.MustCompile(`<text class="name" x="[^"]+" y="([0-9.]+)"|<rect class="bar s-[^"]+" x="[^"]+" y="([0-9.]+)"`).FindAllStringSubmatch(section(t, out, "agents"), -1) {
		if m[1] != "" {
			names++
			nameY = number(t, m[1])
			continue
		}
		require.GreaterOrEqual(t, number(t, m[2]), nameY+4, "a bar under its agent's name")
	}
	require.Equal(t, len(r.Agents), names)

	// The per-tick axis: whole numbers from 0, a round step apart, up to
	// the highest bar or above.
	var labels []float64
	for _, m := range regexp.MustCompile(`<text class="ylabel"[^>]*>([^<]+)</text>`).FindAllStringSubmatch(section(t, out, "per-tick"), -1) {
		labels = append(labels, number(t, m[1]))
	}
	require.GreaterOrEqual(t, len(labels), 2)
	require.Zero(t, labels[0])
	stepY := labels[1] - labels[0]
	for i := 1; i < len(labels); i++ {
		require.Equal(t, stepY, labels[i]-labels[i-1], "labels %v", labels)
	}
	require.GreaterOrEqual(t, labels[len(labels)-1], float64(maxPerTick(r.PerTick)), "labels %v", labels)
}

// section returns the svg element of id in the dumped page out.
func section(t *testing.T, out, id string) string {
	t.Helper()
	i := strings.Index(out, `id="`+id+`"`)
	require.NotEqual(t, -1, i, id)
	end := strings.Index(out[i:], "</svg>")
	require.NotEqual(t, -1, end, id)
	return out[i : i+end]
}

func number(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err, s)
	return v
}

// maxPerTick is the highest bar of the per-tick plot: sagas started in a
// tick, or finished in it with one status.
func maxPerTick(rows []tickRow) int {
	high, prev := 0, tickRow{}
	for _, row := range rows {
		high = max(high, row.Started, row.Completed-prev.Completed, row.RolledBack-prev.RolledBack, row.TimedOut-prev.TimedOut, row.Failed-prev.Failed)
		prev = row
	}
	return high
}

// TestReportIncludesLateAgents: agents beyond those the run waited for
// are in the report, and counted.
func TestReportIncludesLateAgents(t *testing.T) {
	jsonPath, _ := runSmall(t, 2, 0)
	data, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	var r report
	require.NoError(t, json.Unmarshal(data, &r))
	require.Len(t, r.Agents, 6)
	require.Equal(t, 2, r.LateAgents)
	var names []string
	for _, a := range r.Agents {
		names = append(names, a.Agent)
	}
	require.Subset(t, names, []string{"late-0", "late-1"})
}

// TestSampleTimelineKeepsTheEarliest: of 500 sagas of each of two
// outcomes, many started at the same tick, the timeline keeps the six
// started first of each (ties by id), ordered by outcome, tick and id.
func TestSampleTimelineKeepsTheEarliest(t *testing.T) {
	final := map[string]saga.Execution{}
	var want []string
	for i := range 1000 {
		st := saga.Completed
		if i%2 == 1 {
			st = saga.TimedOut
		}
		// Ticks 40 down to 5, eight sagas a tick; ids that do not sort by tick.
		x := saga.Execution{ID: fmt.Sprintf("s-%04d", (i*7919)%1000), Status: st, StartedTick: 40 - int64(i/30)}
		final[x.ID] = x
	}
	for _, o := range []flood.Outcome{flood.OutcomeCompleted, flood.OutcomeTimedOut} {
		var xs []saga.Execution
		for _, x := range final {
			if flood.Classify(&x) == o {
				xs = append(xs, x)
			}
		}
		slices.SortFunc(xs, func(a, b saga.Execution) int {
			return cmp.Or(cmp.Compare(a.StartedTick, b.StartedTick), cmp.Compare(a.ID, b.ID))
		})
		for _, x := range xs[:timelineSample] {
			want = append(want, fmt.Sprintf("%s %d %s", o, x.StartedTick, x.ID))
		}
	}
	var got []string
	for _, x := range sampleTimeline(final) {
		got = append(got, fmt.Sprintf("%s %d %s", x.Outcome, x.Started, x.ID))
	}
	require.Equal(t, want, got)
}

// TestSampleTimelineOfNoSagas: a run with no sagas has an empty timeline,
// which the JSON report writes as [], as it does every other list.
func TestSampleTimelineOfNoSagas(t *testing.T) {
	data, err := json.Marshal(sampleTimeline(nil))
	require.NoError(t, err)
	require.Equal(t, "[]", string(data))
}

// TestReportEscapesAgentNames: an agent's role and name come from whoever
// answers discovery; the text report shows what a terminal would act on
// escaped.
func TestReportEscapesAgentNames(t *testing.T) {
	r := &report{Agents: []messages.AgentStats{{Role: "household\x1b[2J", Agent: "evil\r\x1b[31m", PID: 7}}}
	var out bytes.Buffer
	r.print(&out)
	require.NotContains(t, out.String(), "\x1b")
	require.NotContains(t, out.String(), "\r")
	require.Contains(t, out.String(), `household\x1b[2J evil\r\x1b[31m`)
}
