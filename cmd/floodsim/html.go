package main

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"slices"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/saga"
)

// tickRow is one tick of the run, as the progress line and the HTML
// report show it. The counts of finished sagas are the run's totals so
// far.
type tickRow struct {
	// T is the tick of the scenario (1 is the first), Tick the
	// coordinator's.
	T          int   `json:"t"`
	Tick       int64 `json:"tick"`
	Started    int   `json:"started"`
	Active     int   `json:"active"`
	Completed  int   `json:"completed"`
	RolledBack int   `json:"rolled_back"`
	TimedOut   int   `json:"timed_out"`
	Failed     int   `json:"failed"`
	// Budget and Fund are the government's and the insurer's ledgers
	// after the tick, in cents.
	Budget int64 `json:"budget"`
	Fund   int64 `json:"fund"`
	// Quiet is false for the tick that did not become quiet within
	// -tick-wait, the last of a run that stopped.
	Quiet  bool  `json:"quiet"`
	WallMS int64 `json:"wall_ms"`
	Extra  bool  `json:"extra,omitempty"`
}

// timelineSaga is one saga of the HTML report's timeline: its history,
// tick by tick.
type timelineSaga struct {
	ID      string            `json:"saga_id"`
	Saga    string            `json:"saga"`
	Status  saga.Status       `json:"status"`
	Outcome flood.Outcome     `json:"outcome"`
	Started int64             `json:"started_tick"`
	History []saga.Transition `json:"history"`
}

// timelineSample is how many sagas of each outcome the timeline shows at
// most.
const timelineSample = 6

// sampleTimeline picks up to timelineSample sagas of each outcome from
// final, the earliest started first (ties by id), so that a rollback of
// each kind shows beside the completions.
//
// It keeps each outcome's earliest as it goes, rather than sorting every
// saga of the run.
func sampleTimeline(final map[string]saga.Execution) []timelineSaga {
	earlier := func(a, b timelineSaga) int { return cmp.Or(cmp.Compare(a.Started, b.Started), cmp.Compare(a.ID, b.ID)) }
	byOutcome := map[flood.Outcome][]timelineSaga{}
	for id := range final {
		x := final[id]
		o := flood.Classify(&x)
		kept := byOutcome[o]
		t := timelineSaga{ID: x.ID, Saga: x.Saga, Status: x.Status, Outcome: o, Started: x.StartedTick, History: x.History}
		if len(kept) == timelineSample && earlier(t, kept[timelineSample-1]) > 0 {
			continue
		}
		i, _ := slices.BinarySearchFunc(kept, t, earlier)
		kept = slices.Insert(kept, i, t)
		byOutcome[o] = kept[:min(len(kept), timelineSample)]
	}
	out := []timelineSaga{} // a run with no sagas: [] in the JSON report, not null
	for _, xs := range byOutcome {
		out = append(out, xs...)
	}
	slices.SortFunc(out, func(a, b timelineSaga) int {
		return cmp.Or(cmp.Compare(a.Outcome, b.Outcome), cmp.Compare(a.Started, b.Started), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// writeHTML writes r as one self-contained HTML page to out: the data
// inline, drawn as SVG by inline script, nothing fetched.
func (r *report) writeHTML(out *output) error {
	var b bytes.Buffer
	if err := htmlReport.Execute(&b, r); err != nil {
		return fmt.Errorf("HTML report: %w", err)
	}
	if err := out.write(b.Bytes()); err != nil {
		return fmt.Errorf("HTML report: %w", err)
	}
	return nil
}

var htmlReport = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>floodsim report: seed {{.Seed}}, {{.Households}} households, {{.Ticks}} ticks</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; display: block; overflow-x: auto; max-width: 100%; } td, th { padding: 2px 10px; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #cf222e; font-weight: bold; }
svg.plot { display: block; width: 100%; height: auto; background: #fcfcfc; border: 1px solid #eee; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
.legend span { display: inline-block; margin-right: 1.2em; } .legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
.s-started { fill: #8c959f; background: #8c959f; } .s-completed { fill: #2da44e; background: #2da44e; } .s-rolled_back { fill: #bf8700; background: #bf8700; }
.s-timed_out { fill: #8250df; background: #8250df; } .s-failed { fill: #cf222e; background: #cf222e; }
.s-execute { fill: #218bff; background: #218bff; } .s-compensate { fill: #e16f24; background: #e16f24; }
.s-budget { stroke: #0969da; background: #0969da; } .s-fund { stroke: #bf3989; background: #bf3989; }
path.line { fill: none; stroke-width: 2; }
</style>
</head>
<body>
<h1>floodsim report</h1>
<p>Seed {{.Seed}}, {{.Households}} households, {{.Ticks}} ticks (+{{.ExtraTicks}} extra), mode {{.Mode}}, {{.Durations.TotalMS}} ms.
Invariants: {{if .Invariants.OK}}<span class="ok">ok</span>{{else}}<span class="bad">VIOLATED</span>{{end}}.
{{with .MissingOutcomes}}<span class="bad">Missing outcomes: {{.}}</span>{{end}}</p>
{{with .Invariants.Violations}}<ul>{{range .}}<li class="bad">{{.}}</li>{{end}}</ul>{{end}}
{{with .Aborted}}<p class="bad">Aborted: {{.}}</p>{{end}}

<h2>Sagas</h2>
<table id="sagas"><tr><th>saga</th><th>completed</th><th>rolled_back</th><th>timed_out</th><th>failed</th><th>lost</th></tr>
{{range $typ, $c := .Sagas}}<tr><td>{{$typ}}</td><td>{{index $c "completed"}}</td><td>{{index $c "rolled_back"}}</td><td>{{index $c "timed_out"}}</td><td>{{index $c "failed"}}</td><td>{{index $c "lost"}}</td></tr>
{{end}}</table>

<h2>Per tick: sagas started and finished</h2>
<div class="legend"><span><i class="s-started"></i>started</span><span><i class="s-completed"></i>completed</span><span><i class="s-rolled_back"></i>rolled back</span><span><i class="s-timed_out"></i>timed out</span><span><i class="s-failed"></i>failed</span></div>
<svg class="plot" id="per-tick" viewBox="0 0 1000 300" role="img" aria-label="sagas started and finished per tick"></svg>

<h2>Per tick: ledgers</h2>
<div class="legend"><span><i class="s-budget"></i>government budget</span><span><i class="s-fund"></i>insurer fund</span></div>
<svg class="plot" id="ledgers" viewBox="0 0 1000 260" role="img" aria-label="ledgers per tick"></svg>

<h2>Timeline of a sample of sagas</h2>
<p>{{len .Timeline}} sagas, a few of each outcome: each bar is a step command, from when it was sent to the saga's next change; changes within one tick share it.</p>
<div class="legend"><span><i class="s-execute"></i>execute</span><span><i class="s-compensate"></i>compensate</span><span><i class="s-completed"></i>completed</span><span><i class="s-rolled_back"></i>rolled back</span><span><i class="s-timed_out"></i>timed out</span><span><i class="s-failed"></i>failed</span></div>
<svg class="plot" id="timeline" viewBox="0 0 1000 100" role="img" aria-label="timeline of sagas"></svg>

<h2>The agents' work</h2>
<div class="legend"><span><i class="s-execute"></i>executed</span><span><i class="s-compensate"></i>compensated</span><span><i class="s-timed_out"></i>duplicates absorbed</span><span><i class="s-failed"></i>refused</span></div>
<svg class="plot" id="agents" viewBox="0 0 1000 100" role="img" aria-label="agents' work"></svg>
<table id="agent-table"><tr><th>agent</th><th>role</th><th>pid</th><th>handled</th><th>executed</th><th>compensated</th><th>duplicates</th><th>refused</th><th>redelivered</th><th>rejected</th></tr>
{{range .Agents}}<tr><td>{{.Agent}}</td><td>{{.Role}}</td><td>{{.PID}}</td><td>{{.Handled}}</td><td>{{.Executed}}</td><td>{{.Compensated}}</td><td>{{.Duplicates}}</td><td>{{.Refused}}</td><td>{{.Redelivered}}</td><td>{{.Rejected}}</td></tr>
{{end}}</table>

<script>
"use strict";
const DATA = {{.}};
const NS = "http://www.w3.org/2000/svg";
function el(parent, name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  parent.appendChild(e);
  return e;
}
function money(c) { return (c / 100).toLocaleString("en-US", {maximumFractionDigits: 0}); }
// step returns a round step (1, 2 or 5 times a power of ten, at least 1)
// near raw, so that axis labels are whole numbers at their true heights.
function step(raw) {
  if (raw <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}
// axes draws a y axis from 0 to max, or the first round label above it,
// labelled every round step (about four of them), and returns y().
function axes(svg, x0, y0, w, h, max, fmt) {
  const s = step(max / 4), top = Math.max(Math.ceil(max / s), 1) * s;
  const y = v => y0 + h - v / top * h;
  el(svg, "line", {x1: x0, y1: y0 + h, x2: x0 + w, y2: y0 + h, stroke: "#999"});
  el(svg, "line", {x1: x0, y1: y0, x2: x0, y2: y0 + h, stroke: "#999"});
  for (let v = 0; v <= top; v += s)
    el(svg, "text", {class: "ylabel", x: x0 - 6, y: y(v) + 4, "text-anchor": "end"}, fmt(v));
  return y;
}
function perTick() {
  const svg = document.getElementById("per-tick"), rows = DATA.per_tick || [];
  const keys = ["started", "completed", "rolled_back", "timed_out", "failed"];
  const delta = rows.map((r, i) => {
    const p = i > 0 ? rows[i - 1] : {completed: 0, rolled_back: 0, timed_out: 0, failed: 0};
    return {t: r.t, started: r.started, completed: r.completed - p.completed, rolled_back: r.rolled_back - p.rolled_back,
      timed_out: r.timed_out - p.timed_out, failed: r.failed - p.failed};
  });
  let max = 1;
  for (const d of delta) for (const k of keys) max = Math.max(max, d[k]);
  const x0 = 60, y0 = 10, w = 920, h = 250;
  const y = axes(svg, x0, y0, w, h, max, v => v);
  const slot = w / Math.max(rows.length, 1), bw = slot * 0.8 / keys.length;
  delta.forEach((d, i) => {
    keys.forEach((k, j) => {
      if (d[k] <= 0) return;
      const r = el(svg, "rect", {class: "bar s-" + k, x: x0 + i * slot + slot * 0.1 + j * bw, y: y(d[k]), width: bw, height: y0 + h - y(d[k])});
      el(r, "title", {}, "tick " + d.t + ": " + k + " " + d[k]);
    });
    if (rows.length <= 40 || i % Math.ceil(rows.length / 40) === 0)
      el(svg, "text", {x: x0 + i * slot + slot / 2, y: y0 + h + 16, "text-anchor": "middle"}, d.t);
  });
}
function ledgers() {
  const svg = document.getElementById("ledgers"), ticks = DATA.per_tick || [];
  // The balances the run found, before its first tick's payouts.
  const gov = (DATA.ledgers || {}).government, ins = (DATA.ledgers || {}).insurer;
  const rows = gov && ins && ticks.length
    ? [{t: ticks[0].t - 1, budget: gov.before.balance, fund: ins.before.balance}].concat(ticks) : ticks;
  let max = 1;
  for (const r of rows) max = Math.max(max, r.budget, r.fund);
  const x0 = 90, y0 = 10, w = 890, h = 210;
  const y = axes(svg, x0, y0, w, h, max, money);
  const x = i => x0 + (rows.length > 1 ? i / (rows.length - 1) * w : w / 2);
  for (const k of ["budget", "fund"]) {
    if (rows.length === 0) continue;
    const d = rows.map((r, i) => (i ? "L" : "M") + x(i).toFixed(1) + " " + y(r[k]).toFixed(1)).join(" ");
    el(svg, "path", {class: "line s-" + k, d: d});
  }
  rows.forEach((r, i) => {
    if (rows.length <= 40 || i % Math.ceil(rows.length / 40) === 0)
      el(svg, "text", {x: x(i), y: y0 + h + 16, "text-anchor": "middle"}, r.t);
  });
}
function timeline() {
  const svg = document.getElementById("timeline"), xs = DATA.timeline || [];
  // Drawn on the coordinator's clock, labelled with the scenario's ticks
  // as the per-tick plots are: the clock need not start at 0.
  const rows = DATA.per_tick || [], base = rows.length ? rows[0].tick - rows[0].t : 0;
  let t0 = Infinity, t1 = -Infinity;
  for (const s of xs) for (const h of s.history) { t0 = Math.min(t0, h.tick); t1 = Math.max(t1, h.tick); }
  if (!isFinite(t0)) { t0 = 0; t1 = 1; }
  t1 = Math.max(t1, t0 + 1);
  const x0 = 260, w = 720, row = 18, y0 = 20;
  svg.setAttribute("viewBox", "0 0 1000 " + (y0 + xs.length * row + 30));
  const x = t => x0 + (t - t0) / (t1 + 1 - t0) * w;
  for (let t = t0; t <= t1 + 1; t++)
    if (t1 - t0 <= 40 || t % Math.ceil((t1 - t0) / 40) === 0) {
      el(svg, "line", {x1: x(t), y1: y0 - 4, x2: x(t), y2: y0 + xs.length * row, stroke: "#eee"});
      el(svg, "text", {x: x(t), y: y0 - 8, "text-anchor": "middle"}, t - base);
    }
  xs.forEach((s, i) => {
    const yy = y0 + i * row;
    el(svg, "text", {x: 4, y: yy + 12}, s.saga + " " + s.saga_id.slice(0, 8) + " " + s.outcome);
    // Changes within one tick share it: each gets an equal slice.
    const hs = s.history, pos = [];
    for (let j = 0; j < hs.length;) {
      let k = j;
      while (k < hs.length && hs[k].tick === hs[j].tick) k++;
      for (let m = j; m < k; m++) pos.push(hs[m].tick + (m - j) / (k - j));
      j = k;
    }
    hs.forEach((h, j) => {
      const end = j + 1 < hs.length ? pos[j + 1] : pos[j] + 0.25;
      if (h.step && h.action) {
        const r = el(svg, "rect", {class: "seg s-" + h.action, x: x(pos[j]), y: yy + 2, width: Math.max(x(end) - x(pos[j]) - 1, 3), height: row - 5, rx: 2});
        el(r, "title", {}, h.action + " " + h.step + " attempt " + (h.attempt || 1) + " at tick " + (h.tick - base) + (h.note ? ": " + h.note : ""));
      } else if (["completed", "rolled_back", "timed_out", "failed"].includes(h.status)) {
        const c = el(svg, "circle", {class: "end s-" + h.status, cx: x(pos[j]), cy: yy + row / 2, r: 5});
        el(c, "title", {}, h.status + " at tick " + (h.tick - base) + (h.note ? ": " + h.note : ""));
      }
    });
  });
}
function agents() {
  const svg = document.getElementById("agents"), as = DATA.agents || [];
  const keys = [["executed", "execute"], ["compensated", "compensate"], ["duplicates", "timed_out"], ["refused", "failed"]];
  let max = 1;
  for (const a of as) max = Math.max(max, a.executed + a.compensated + a.duplicates + a.refused);
  // Each agent's name on a line of its own, over its bar: a name of any
  // length (<role>-<pid>-<random> by default) runs into nothing.
  const x0 = 4, w = 860, row = 36, y0 = 4;
  svg.setAttribute("viewBox", "0 0 1000 " + (y0 + as.length * row + 6));
  as.forEach((a, i) => {
    const yy = y0 + i * row;
    el(svg, "text", {class: "name", x: x0, y: yy + 12}, a.role + " " + a.agent);
    let x = x0;
    for (const [k, cls] of keys) {
      if (a[k] <= 0) continue;
      const bw = a[k] / max * w;
      const r = el(svg, "rect", {class: "bar s-" + cls, x: x, y: yy + 17, width: bw, height: row - 20});
      el(r, "title", {}, a.agent + ": " + k + " " + a[k]);
      x += bw;
    }
    el(svg, "text", {x: x + 4, y: yy + 29}, a.handled + " handled");
  });
}
perTick(); ledgers(); timeline(); agents();
document.documentElement.setAttribute("data-drawn", "yes");
</script>
</body>
</html>
`))
