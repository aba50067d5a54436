package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// small is a scenario that shows every outcome and runs in seconds.
var small = []string{"-households", "40", "-ticks", "10", "-seed", "1"}

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags(nil, env(), io.Discard)
	require.NoError(t, err)
	require.True(t, c.spawn)
	require.Equal(t, flood.DefaultHouseholds, c.scenario.Households)
	require.Equal(t, flood.DefaultTicks, c.scenario.Ticks)
	require.Equal(t, 5, c.spawned())
	require.True(t, c.requireAll)

	// The compose demo's command line, with credentials from the environment.
	c, err = parseFlags([]string{"-nats", "nats://nats:4222", "-spawn=false", "-expect-agents", "8",
		"-households", "50", "-ticks", "12", "-seed", "9", "-json", "/report/report.json"},
		env("NATS_USER", "sim", "NATS_PASSWORD", "secret"), io.Discard)
	require.NoError(t, err)
	require.False(t, c.spawn)
	require.Equal(t, "nats://nats:4222", c.conn.URL)
	require.Equal(t, "sim", c.conn.User)
	require.Equal(t, "secret", c.conn.Password)
	require.Equal(t, 8, c.expectAgents)
	require.Equal(t, flood.ScenarioOptions{Seed: 9, Households: 50, Ticks: 12}, c.scenario)
	require.Equal(t, "/report/report.json", c.jsonPath)

	// The flags of a system floodsim starts are refused when it does not.
	_, err = parseFlags([]string{"-spawn=false", "-budget", "100", "-household-agents", "2", "-bin", "/x"}, env(), io.Discard)
	require.EqualError(t, err, "-bin, -budget, -household-agents: only with -spawn, when floodsim starts the programs; "+
		"with -spawn=false they are started elsewhere, each with its own flags (the government and insurer agents' -ledger)")
	_, err = parseFlags([]string{"-spawn=false", "-fund", "1", "-budget", "2", "-metrics-addr", ":0"}, env(), io.Discard)
	require.EqualError(t, err, "-budget, -fund, -metrics-addr: only with -spawn, when floodsim starts the programs; "+
		"with -spawn=false they are started elsewhere, each with its own flags "+
		"(the government and insurer agents' -ledger; the coordinator's and each agent's -metrics-addr)")
	_, err = parseFlags([]string{"-spawn=false", "-contractor-agents", "2"}, env(), io.Discard)
	require.EqualError(t, err, "-contractor-agents: only with -spawn, when floodsim starts the programs; "+
		"with -spawn=false they are started elsewhere, each with its own flags")

	c, err = parseFlags([]string{"-household-agents", "3", "-contractor-agents", "2"}, env(), io.Discard)
	require.NoError(t, err)
	require.Equal(t, 3, c.copies[flood.Household])
	require.Equal(t, 2, c.copies[flood.Contractor])
	require.Equal(t, 8, c.spawned())

	// -metrics-addr: the coordinator on its port, the agents on the ports
	// after it, in the order spawned; port 0 gives each a free port.
	c, err = parseFlags([]string{"-metrics-addr", "127.0.0.1:9090", "-household-agents", "2"}, env(), io.Discard)
	require.NoError(t, err)
	addrs, err := c.metricsAddrs()
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:9090", "127.0.0.1:9091", "127.0.0.1:9092", "127.0.0.1:9093", "127.0.0.1:9094", "127.0.0.1:9095", "127.0.0.1:9096"}, addrs)
	c, err = parseFlags([]string{"-metrics-addr", ":0"}, env(), io.Discard)
	require.NoError(t, err)
	addrs, err = c.metricsAddrs()
	require.NoError(t, err)
	require.Equal(t, []string{":0", ":0", ":0", ":0", ":0", ":0"}, addrs)
	_, err = parseFlags([]string{"-metrics-addr", "127.0.0.1:65531"}, env(), io.Discard)
	require.EqualError(t, err, `-metrics-addr "127.0.0.1:65531": a port from 0 to 65530, for 6 programs on the ports from it`)
	// The probe's command line: the metrics addresses are the programs'
	// own, where they are started, not the agents' -ledger.
	var stderr bytes.Buffer
	require.Equal(t, 2, mainCode([]string{"-spawn=false", "-metrics-addr", "127.0.0.1:0"}, env(), io.Discard, &stderr))
	require.Equal(t, "floodsim: -metrics-addr: only with -spawn, when floodsim starts the programs; "+
		"with -spawn=false they are started elsewhere, each with its own flags "+
		"(the coordinator's and each agent's -metrics-addr)\n", stderr.String())

	for _, bad := range [][]string{
		{"-households", "0"}, {"-ticks", "-1"}, {"-government-agents", "0"}, {"-tick-wait", "0s"},
		{"-budget", "-5"}, {"extra"}, {"-nope"}, {"-metrics-addr", "9090"}, {"-metrics-addr", "h:x"}, {"-metrics-addr", "h:-1"},
	} {
		_, err := parseFlags(bad, env(), io.Discard)
		require.Error(t, err, "%v", bad)
	}
	_, err = parseFlags([]string{"-h"}, env(), io.Discard)
	require.ErrorIs(t, err, flag.ErrHelp)
	stderr.Reset()
	require.Equal(t, 2, mainCode([]string{"-households", "x"}, env(), io.Discard, &stderr))
	require.Equal(t, 1, strings.Count(stderr.String(), `invalid value "x" for flag -households`), "said once: %s", stderr.String())
	// Each out-of-range flag says its range, on a line of its own.
	stderr.Reset()
	require.Equal(t, 2, mainCode([]string{"-households", "-5", "-ticks", "0"}, env(), io.Discard, &stderr))
	require.Equal(t, "floodsim: -households -5: 1 to 100000\nfloodsim: -ticks 0: 1 to 100000\n", stderr.String())
	// Counts that each pass but would need more processes, or more
	// memory for the plan, than a machine has.
	stderr.Reset()
	require.Equal(t, 2, mainCode([]string{"-plan", "-households", "100000", "-ticks", "101"}, env(), io.Discard, &stderr))
	require.Equal(t, "floodsim: -households and -ticks: 100000 households for 101 ticks: want at most 10000000 households times ticks\n", stderr.String())
	stderr.Reset()
	require.Equal(t, 2, mainCode([]string{"-insurer-agents", "100000000"}, env(), io.Discard, &stderr))
	require.Equal(t, "floodsim: -insurer-agents 100000000: 1 to 32\n", stderr.String())
	// A server's URL that does not parse: no server could take it.
	stderr.Reset()
	require.Equal(t, 2, mainCode([]string{"-spawn=false", "-nats", "://x"}, env(), io.Discard, &stderr))
	require.Equal(t, "floodsim: connect to ://x: the URL does not parse: missing protocol scheme\n", stderr.String())
	_, err = parseFlags([]string{"-bin", "/nonexistent/bin"}, env(), io.Discard)
	require.EqualError(t, err, `-bin "/nonexistent/bin": not a directory`)
	// Connection flags no server could take, refused with the flags, before
	// anything runs.
	_, err = parseFlags([]string{"-spawn=false", "-creds", "/nonexistent/x.creds"}, env(), io.Discard)
	require.ErrorContains(t, err, "NATS security options: stat /nonexistent/x.creds")
	_, err = parseFlags([]string{"-spawn=false", "-inbox-prefix", "saga"}, env(), io.Discard)
	require.ErrorContains(t, err, `-inbox-prefix "saga": natsaga answers no inbox inside its own subjects`)
	// Spawning, what its own connection keeps of the flags is checked as
	// well, before anything starts; the credentials, for another server,
	// are dropped, not checked.
	stderr.Reset()
	require.Equal(t, 2, mainCode([]string{"-reconnect-wait", "-1s"}, env(), io.Discard, &stderr))
	require.Equal(t, "floodsim: -reconnect-wait -1s: must not be negative\n", stderr.String())
	_, err = parseFlags([]string{"-creds", "/nonexistent/x.creds", "-tls-ca", "/nonexistent/ca.pem"}, env("NATS_NKEY", "/nonexistent/n.nk"), io.Discard)
	require.NoError(t, err)
	_, err = parseFlags([]string{"-budget", "0", "-fund", "0"}, env(), io.Discard)
	require.EqualError(t, err, "-budget 0, -fund 0: must be positive; leave it out for the scenario's")
	_, err = parseFlags([]string{"-households", "100000", "-ticks", "100", "-insurer-agents", "32"}, env(), io.Discard)
	require.NoError(t, err, "the largest documented run, and the most copies")
}

func TestMoney(t *testing.T) {
	for cents, want := range map[int64]string{
		0: "0.00", 5: "0.05", 123_45: "123.45", 1_234_56: "1,234.56", 123_456_789_00: "123,456,789.00", -1_000_00: "-1,000.00",
	} {
		require.Equal(t, want, money(cents))
	}
}

func TestPlan(t *testing.T) {
	c, err := parseFlags(append([]string{"-plan"}, small...), env(), io.Discard)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), c, &out, io.Discard))
	var plan struct {
		Sagas            map[string]int `json:"sagas"`
		GovernmentBudget int64          `json:"government_budget"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &plan), out.String())
	require.Positive(t, plan.GovernmentBudget)
	require.Len(t, plan.Sagas, 3)
}

// jsonReport is the contract of the JSON report, as a reader sees it.
type jsonReport struct {
	Sagas           map[string]map[string]int `json:"sagas"`
	InFlightAtStart int                       `json:"in_flight_at_start"`
	Agents          []struct {
		Role     string `json:"role"`
		Agent    string `json:"agent"`
		PID      int    `json:"pid"`
		Handled  int64  `json:"handled"`
		Messages int64  `json:"messages"`
		Batches  int64  `json:"batches"`
	} `json:"agents"`
	Invariants struct {
		OK         bool     `json:"ok"`
		Violations []string `json:"violations"`
	} `json:"invariants"`
	Outcomes        map[string]int `json:"outcomes"`
	MissingOutcomes []string       `json:"missing_outcomes"`
	OutcomesSHA256  string         `json:"outcomes_sha256"`
}

func readReport(t *testing.T, path string) jsonReport {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var r jsonReport
	require.NoError(t, json.Unmarshal(data, &r), string(data))
	return r
}

// requireSound checks what every correct run reports: the invariants hold,
// every saga type ran, none is lost or failed, and every outcome was seen.
func requireSound(t *testing.T, r jsonReport) {
	t.Helper()
	require.True(t, r.Invariants.OK, "violations: %v", r.Invariants.Violations)
	require.Empty(t, r.Invariants.Violations)
	for _, typ := range []string{flood.Subsidy, flood.Insurance, flood.Elevation} {
		counts, ok := r.Sagas[typ]
		require.True(t, ok, "no %s sagas in %v", typ, r.Sagas)
		require.Zero(t, counts["failed"], typ)
		require.Zero(t, counts["lost"], typ)
	}
	require.Positive(t, r.Sagas[flood.Insurance]["completed"])
	for _, o := range flood.RequiredOutcomes() {
		require.Positive(t, r.Outcomes[string(o)], "outcome %s never seen: %v", o, r.Outcomes)
	}
	require.Empty(t, r.MissingOutcomes)
}

// TestSpawnEndToEnd runs a small simulation the way `go run ./cmd/floodsim`
// does: an embedded server, and the coordinator and five agents as separate
// OS processes, built into a temporary directory.
func TestSpawnEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the programs")
	}
	// A metrics address in floodsim's environment is not its programs':
	// each would try to listen on it (here taken already) and exit.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	t.Setenv("NATSAGA_METRICS_ADDR", taken.Addr().String())
	dir := t.TempDir()
	report := filepath.Join(dir, "report.json")
	args := append([]string{"-json", report, "-build-dir", filepath.Join(dir, "bin"), "-data", filepath.Join(dir, "data"),
		"-log-format", "json"}, small...)
	c, err := parseFlags(args, env(), io.Discard)
	require.NoError(t, err)
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = run(ctx, c, &stdout, &stderr)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	t.Log(stdout.String())

	r := readReport(t, report)
	requireSound(t, r)
	pids := map[int]bool{}
	roles := map[string]int{}
	for _, a := range r.Agents {
		require.NotZero(t, a.PID)
		require.NotEqual(t, os.Getpid(), a.PID, "agents run in their own processes")
		pids[a.PID] = true
		roles[a.Role]++
	}
	require.Len(t, r.Agents, 5)
	require.Len(t, pids, 5, "one process per agent")
	require.Equal(t, map[string]int{flood.Household: 1, flood.Government: 2, flood.Insurer: 1, flood.Contractor: 1}, roles)
	// Copies of a role that is not serial share its work; a serial role
	// is pinned to one copy at a time, so any one of them may take all of
	// a short run's work, and only the role must have done some. The
	// serial roles commit the commands of a round in batches, and only
	// they do.
	byRole, batches, msgs := map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, a := range r.Agents {
		byRole[a.Role] += a.Handled
		batches[a.Role] += a.Batches
		msgs[a.Role] += a.Messages
		if !flood.Serial(a.Role) {
			require.Positive(t, a.Handled, "agent %s handled nothing", a.Agent)
		}
	}
	for role, n := range byRole {
		require.Positive(t, n, "role %s handled nothing", role)
		if flood.Serial(role) {
			require.Positive(t, batches[role], "role %s ran no batch", role)
		} else {
			require.Zero(t, batches[role], "role %s is not serial", role)
		}
	}
	// A tick's starts reach the household in command batches: fewer
	// messages than commands.
	require.Positive(t, msgs[flood.Household])
	require.Less(t, msgs[flood.Household], byRole[flood.Household], "the household got no command batch")
	require.Contains(t, stdout.String(), "tick   1/10")
	require.Contains(t, stdout.String(), "invariants: ok")
	log, err := os.ReadFile(filepath.Join(dir, "data", "floodsim.log"))
	require.NoError(t, err)
	require.Contains(t, string(log), "agent serving", "the agents log to the data directory")
	// With -log-format json, every line the six processes wrote at once is
	// a whole JSON object that names its process.
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "a log line that is not JSON: %s", line)
		require.Contains(t, rec, "process", line)
		require.Contains(t, rec, "pid", line)
	}
}

// TestSpawnedProgramsServeMetrics runs a small simulation with
// -metrics-addr on free ports: every program floodsim starts serves its
// metrics on a port of its own, and floodsim logs each address, learnt
// from the programs' micro services, as the program itself logged it.
func TestSpawnedProgramsServeMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the programs")
	}
	dir := t.TempDir()
	args := append([]string{"-metrics-addr", "127.0.0.1:0", "-build-dir", filepath.Join(dir, "bin"), "-data", filepath.Join(dir, "data"),
		"-log-format", "json", "-require-all-outcomes=false"}, "-households", "10", "-ticks", "2")
	c, err := parseFlags(args, env(), io.Discard)
	require.NoError(t, err)
	var stdout, stderr testenv.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	require.NoError(t, run(ctx, c, &stdout, &stderr), "stderr:\n%s", stderr.String())

	// What floodsim printed: one address a program, all different.
	announced := map[string]string{} // program by address
	for _, m := range regexp.MustCompile(`(?m)^  (\S+)\s+http://(\S+)/metrics$`).FindAllStringSubmatch(stdout.String(), -1) {
		require.NotContains(t, announced, m[2])
		require.NotRegexp(t, `:0$`, m[2])
		announced[m[2]] = m[1]
	}
	require.Len(t, announced, 6, stdout.String())
	// What each program logged, in the processes' log.
	log, err := os.ReadFile(filepath.Join(dir, "data", "floodsim.log"))
	require.NoError(t, err)
	served := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		var rec struct{ Msg, Process, Addr string }
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		if rec.Msg == "serving metrics and health" {
			served[rec.Addr] = rec.Process
		}
	}
	require.Len(t, served, 6)
	for addr, name := range announced {
		program := "coordinator"
		if name != program { // an agent, by its name: household-1 is a household-agent
			program = name[:strings.LastIndex(name, "-")] + "-agent"
		}
		require.Equal(t, program, served[addr], "the address %s is the one %s serves", addr, name)
	}
}

// TestCoordinatorThatExitsAtStartIsSaid: a coordinator that exits as it
// starts (its metrics port is taken) is said as such, at once, with its
// last line, not as a coordinator that did not answer within -agent-wait.
func TestCoordinatorThatExitsAtStartIsSaid(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the programs")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer taken.Close()
	dir := t.TempDir()
	c, err := parseFlags([]string{"-metrics-addr", taken.Addr().String(), "-build-dir", filepath.Join(dir, "bin"),
		"-households", "10", "-ticks", "1", "-agent-wait", "10m"}, env(), io.Discard)
	require.NoError(t, err)
	var stdout, stderr testenv.SyncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = run(ctx, c, &stdout, &stderr)
	require.ErrorContains(t, err, "waiting for the coordinator: coordinator (pid ")
	require.ErrorContains(t, err, "exited: exit status 1; its last line: ")
	require.ErrorContains(t, err, "address already in use", "with why, which the log removed with the run's directory said")
	require.NoError(t, ctx.Err(), "said before the wait ran out")
}

// inProcessSystem parses the small scenario's flags for a driver that
// spawns nothing (-expect-agents 4), and starts an embedded server with the
// coordinator and one agent per role in this process, opened with the
// scenario's ledgers and answering the state query. It returns the flags
// and the server's URL.
func inProcessSystem(t *testing.T) (config, string) {
	t.Helper()
	c, err := parseFlags(append([]string{"-spawn=false", "-expect-agents", "4"}, small...), env(), io.Discard)
	require.NoError(t, err)
	sc, err := flood.NewScenario(c.scenario)
	require.NoError(t, err)
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	ledger := map[string]int64{flood.Government: sc.GovernmentBudget, flood.Insurer: sc.InsurerFund}
	for _, role := range roles() {
		steps, err := flood.Steps(role)
		require.NoError(t, err)
		opts := participant.Options{Role: role, Steps: steps, Serial: flood.Serial(role)}
		if l, ok := ledger[role]; ok {
			opts.Init = flood.InitLedger(l)
		}
		testenv.Agent(t, url, opts)
		serveQueries(t, url, role)
	}
	return c, url
}

// TestExternal drives a system that runs already, as the compose demo
// does: here an embedded server with the coordinator and one agent per
// role in this process, opened with the scenario's ledgers.
func TestExternal(t *testing.T) {
	c, url := inProcessSystem(t)
	c.conn.URL = url
	c.jsonPath = filepath.Join(t.TempDir(), "report.json")
	var stdout bytes.Buffer
	require.NoError(t, run(context.Background(), c, &stdout, io.Discard), stdout.String())
	r := readReport(t, c.jsonPath)
	requireSound(t, r)
	require.Len(t, r.Agents, 4)

	// A second run against the same system goes on from its clock and
	// checks only its own sagas and spending. A saga of another run, in
	// flight as it begins (scheduled for its first tick, as a stopped
	// run's next sagas are), is said: such sagas spend its ledgers.
	cl, err := client.New(testenv.Connect(t, url), client.Options{})
	require.NoError(t, err)
	sum, err := cl.Summary(context.Background())
	require.NoError(t, err)
	_, err = cl.Start(context.Background(), client.Start{Saga: flood.Subsidy, ID: "earlier-run-1", Rank: 1, Tick: sum.Tick + 1,
		Context: messages.Context{}.MustSet("household", "nobody")})
	require.NoError(t, err)
	c.requireAll = false
	stdout.Reset()
	require.NoError(t, run(context.Background(), c, &stdout, io.Discard), stdout.String())
	r = readReport(t, c.jsonPath)
	require.True(t, r.Invariants.OK, "violations: %v", r.Invariants.Violations)
	require.True(t, strings.Contains(stdout.String(), "invariants: ok"))
	require.Contains(t, stdout.String(), "floodsim: note: the coordinator holds 1 sagas in flight that are not this run's")
	require.Equal(t, 1, r.InFlightAtStart)
}

// TestExternalNoAgents fails clearly when the agents it expects never
// answer.
func TestExternalNoAgents(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	c, err := parseFlags(append([]string{"-spawn=false", "-expect-agents", "2", "-agent-wait", "1s", "-nats", url}, small...), env(), io.Discard)
	require.NoError(t, err)
	err = run(context.Background(), c, io.Discard, io.Discard)
	require.ErrorContains(t, err, "only 0 of 2 agents (micro service natsaga-agent) answered")
}

// TestBin uses prebuilt binaries, and reports a directory without them.
func TestBin(t *testing.T) {
	c, err := parseFlags(append([]string{"-bin", t.TempDir()}, small...), env(), io.Discard)
	require.NoError(t, err)
	err = run(context.Background(), c, io.Discard, io.Discard)
	require.ErrorContains(t, err, "-bin")
	require.Contains(t, procs.Programs, "coordinator")
}

// TestExternalStalled stops ticking when the system stops answering (here:
// no contractor runs): the run fails, since it can no longer be reproduced,
// and its report names the sagas left unfinished as violations.
//
// -tick-wait is the longest the live agents may go without answering any
// due command before the run gives up on them: under -race on a loaded
// machine their first answers took longer than 300ms, and the run stopped
// at their steps, not the contractor's. The stall this test (and
// TestStoppedByAnAgentGone) wants is forever, so a few seconds cost only
// that much time and leave the live agents room.
func TestExternalStalled(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	startAgents(t, url, 1_000_000_00, true, flood.Household, flood.Government, flood.Insurer)
	// The contractor's store exists, and its state query is answered, but
	// no contractor serves its step.
	_, err := participant.OpenStore(context.Background(), testenv.Connect(t, url), flood.Contractor, true, 1)
	serveQueries(t, url, flood.Contractor)
	require.NoError(t, err)

	report := filepath.Join(t.TempDir(), "report.json")
	c, err := parseFlags(append([]string{"-spawn=false", "-nats", url, "-expect-agents", "3", "-json", report,
		"-tick-wait", "3s"}, small...), env(), io.Discard)
	require.NoError(t, err)
	var stdout bytes.Buffer
	err = run(context.Background(), c, &stdout, io.Discard)
	require.ErrorIs(t, err, errNotReproducible, stdout.String())
	require.Contains(t, stdout.String(), "stopped ticking: tick ")
	// It names sagas it waited for: elevations at the contractor's step.
	require.Regexp(t, `had no answer for 3s \(-tick-wait\); waiting for [0-9a-f-]{36} \(elevation_grant, execute elevation\.contractor_elevates, attempt 1\)(, [^;]+)?; the run can no longer be reproduced`, stdout.String())

	var r struct {
		Aborted    string `json:"aborted"`
		Invariants struct {
			OK         bool     `json:"ok"`
			Violations []string `json:"violations"`
		} `json:"invariants"`
	}
	data, err := os.ReadFile(report)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &r))
	require.NotEmpty(t, r.Aborted)
	require.False(t, r.Invariants.OK)
	require.Contains(t, strings.Join(r.Invariants.Violations, "\n"), "(elevation) not terminal")
}

// TestStoppedByAnAgentGone stops ticking when the insurer, whose ledger
// every tick reads, is gone after the run began: floodsim says why it
// stopped, names the sagas at the insurer's step, and asks for the ledger
// once, not for a restart's patience.
func TestStoppedByAnAgentGone(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	startAgents(t, url, 1_000_000_00, true, flood.Household, flood.Government, flood.Contractor)
	// The insurer answers its state query once, as the run begins, and is
	// gone: no insurer serves its steps.
	nc := testenv.Connect(t, url)
	sub, err := nc.Subscribe(flood.StateSubject(flood.Insurer), func(m *nats.Msg) {
		data, err := json.Marshal(flood.StateAnswer{V: messages.Version, Ledger: &flood.Ledger{Initial: 1_000_000_00, Balance: 1_000_000_00}})
		if err == nil {
			_ = m.Respond(data)
		}
	})
	require.NoError(t, err)
	require.NoError(t, sub.AutoUnsubscribe(1))
	require.NoError(t, nc.Flush())

	outcomes := filepath.Join(t.TempDir(), "outcomes.jsonl")
	c, err := parseFlags(append([]string{"-spawn=false", "-nats", url, "-expect-agents", "3", "-tick-wait", "3s", "-outcomes", outcomes}, small...), env(), io.Discard)
	require.NoError(t, err)
	var stdout bytes.Buffer
	began := time.Now()
	err = run(context.Background(), c, &stdout, io.Discard)
	require.ErrorIs(t, err, errNotReproducible, stdout.String())
	require.ErrorContains(t, err, "(and no report: flood.state.insurer: ")
	// The outcome log needs only the coordinator: written all the same,
	// the sagas that did not end among its lines.
	require.Contains(t, stdout.String(), "outcome log written to "+outcomes)
	data, err := os.ReadFile(outcomes)
	require.NoError(t, err)
	require.Contains(t, string(data), `"status":"in_progress"`)
	require.Less(t, time.Since(began), c.agentWait/2, "the ledger was asked for once")
	require.Regexp(t, `budget left\s+not read\s+[0-9.]+s  \(not quiet: [0-9]+ due\)`, stdout.String())
	require.Regexp(t, `floodsim: stopped ticking: tick [0-9]+: [0-9]+ commands due had no answer for 3s \(-tick-wait\); waiting for [0-9a-f-]{36} \(insurance_claim, execute insurance\.insurer_evaluates, attempt 1\)`, stdout.String())
}

// startAgents runs an agent of each of roles on url until the test ends,
// the roles that hold money opening their ledger at ledger, and, when
// queries is set, answers their state query.
func startAgents(t *testing.T, url string, ledger int64, queries bool, roles ...string) {
	t.Helper()
	for _, role := range roles {
		steps, err := flood.Steps(role)
		require.NoError(t, err)
		opts := participant.Options{Role: role, Steps: steps, Serial: flood.Serial(role)}
		if role == flood.Government || role == flood.Insurer {
			opts.Init = flood.InitLedger(ledger)
		}
		testenv.Agent(t, url, opts)
		if queries {
			serveQueries(t, url, role)
		}
	}
}

// serveQueries answers flood's state query for role until the test ends,
// as the agent programs do beside their agent.
func serveQueries(t *testing.T, url, role string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nc := testenv.Connect(t, url)
	done := make(chan error, 1)
	go func() { done <- participant.ServeQueries(ctx, nc, role, flood.StateSubject(role), flood.AnswerState) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}
