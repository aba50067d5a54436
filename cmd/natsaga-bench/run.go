package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/natsaga/natsaga/cmd/natsaga-bench/internal/baseline"
	"github.com/natsaga/natsaga/cmd/natsaga-bench/internal/bench"
	"github.com/natsaga/natsaga/messages"
)

// measurement is what one mode measured in one configuration.
type measurement struct {
	SagasPerS float64 `json:"sagas_per_s"`
	P50MS     float64 `json:"p50_ms"`
	P99MS     float64 `json:"p99_ms"`
	// CPUPer1k is the CPU seconds the server, coordinator and agent
	// processes used per 1,000 sagas completed in the window.
	CPUPer1k float64 `json:"cpu_s_per_1k_sagas"`
	// CPUByProcess splits CPUPer1k into "server", "coordinator" and
	// "agents".
	CPUByProcess map[string]float64 `json:"cpu_s_per_1k_by_process"`
	// LoadgenCPUPer1k is the benchmark process's own CPU (the load
	// generator), not counted in CPUPer1k.
	LoadgenCPUPer1k float64 `json:"loadgen_cpu_s_per_1k_sagas"`
	// StoredPerSaga is how many messages the server stored, in all its
	// streams and buckets, per saga completed in the window: the
	// machine-independent share of the server's work.
	StoredPerSaga float64 `json:"stored_msgs_per_saga"`
	// StoredByKind splits StoredPerSaga by what the streams hold: for
	// natsaga, "bucket" (the sagas that ended), "sagas" (the saga log),
	// "records" (the barrier records),
	// "state" (the roles' state values), "commands", "replies" and
	// "events". Where commands, records or events share messages, their
	// share is below the number a saga sends.
	StoredByKind map[string]float64 `json:"stored_msgs_per_saga_by_kind,omitempty"`
	// CoordBytesPerSaga is the coordinator's live heap with the sagas in
	// flight, minus its live heap before the load, divided by the sagas
	// in flight.
	CoordBytesPerSaga float64 `json:"coordinator_bytes_per_saga"`
	Completed         int     `json:"completed"`
	NotCompleted      int     `json:"not_completed"`
	Errors            int     `json:"errors"`
	WindowS           float64 `json:"window_s"`
}

// result is one configuration's figures in one run: natsaga's (or the
// baseline's, when only it was measured) with the baseline's beside them.
type result struct {
	Mode          string  `json:"mode"`
	Run           int     `json:"run"`
	InFlight      int     `json:"inflight"`
	Agents        int     `json:"agents"`
	Concurrency   int     `json:"concurrency"`
	StepLatencyMS float64 `json:"step_latency_ms"`
	measurement
	BaselineSagasPerS float64 `json:"baseline_sagas_per_s,omitempty"`
	BaselineP50MS     float64 `json:"baseline_p50_ms,omitempty"`
	BaselineP99MS     float64 `json:"baseline_p99_ms,omitempty"`
	BaselineCPUPer1k  float64 `json:"baseline_cpu_s_per_1k_sagas,omitempty"`
	BaselineStored    float64 `json:"baseline_stored_msgs_per_saga,omitempty"`
	// Ratio is natsaga's sagas per second over the baseline's.
	Ratio float64 `json:"ratio,omitempty"`
}

// holdResult is the coordinator's heap with many sagas held in flight, and
// how long a new coordinator took to take them over.
type holdResult struct {
	Mode              string  `json:"mode"`
	Held              int     `json:"held"`
	CoordBytesPerSaga float64 `json:"coordinator_bytes_per_saga"`
	StartsPerS        float64 `json:"starts_per_s"`
	// RecoverS runs from starting a coordinator again, after a clean stop
	// of the one that held the sagas, to its answering requests with every
	// saga restored and caught up.
	RecoverS float64 `json:"recover_s"`
}

// run measures every configuration c.runs times, printing each result as it
// comes, then the hold measurement, then a summary over the runs.
func run(ctx context.Context, c config, stdout, stderr io.Writer, log *slog.Logger) error {
	if c.cpuProfile != "" {
		if err := os.MkdirAll(c.cpuProfile, 0o755); err != nil {
			return fmt.Errorf("-cpuprofile: %w", err)
		}
	}
	var all []result
	for r := 1; r <= c.runs; r++ {
		for _, k := range c.inflight {
			for _, a := range c.agents {
				// The modes take turns going first, so that a drift in the
				// machine's load favours neither.
				order := slices.Clone(c.modes)
				if r%2 == 0 {
					slices.Reverse(order)
				}
				got := map[string]measurement{}
				for _, mode := range order {
					log.Info("measuring", "mode", mode, "inflight", k, "agents", a, "run", r)
					m, err := measure(ctx, &c, mode, k, a, r, stderr, log)
					if err != nil {
						return fmt.Errorf("%s, %d in flight, %d agents: %w", mode, k, a, err)
					}
					got[mode] = m
				}
				res := combine(&c, got, r, k, a)
				all = append(all, res)
				printResult(stdout, c.json, res)
			}
		}
	}
	if c.hold > 0 {
		h, err := measureHold(ctx, &c, stderr, log)
		if err != nil {
			return fmt.Errorf("hold: %w", err)
		}
		if c.json {
			data, _ := json.Marshal(h)
			fmt.Fprintln(stdout, string(data))
		} else {
			fmt.Fprintf(stdout, "natsaga coordinator with %d sagas in flight: %.0f bytes of live heap per saga (%.0f starts/s); a new coordinator took them over in %.2f s\n",
				h.Held, h.CoordBytesPerSaga, h.StartsPerS, h.RecoverS)
		}
	}
	if c.runs > 1 && !c.json {
		printSummary(stdout, all)
	}
	return nil
}

func combine(c *config, got map[string]measurement, r, k, a int) result {
	res := result{Run: r, InFlight: k, Agents: a, Concurrency: c.concurrency,
		StepLatencyMS: float64(c.latency) / float64(time.Millisecond)}
	n, hasN := got[modeNatsaga]
	b, hasB := got[modeBaseline]
	switch {
	case hasN:
		res.Mode, res.measurement = modeNatsaga, n
	default:
		res.Mode, res.measurement = modeBaseline, b
	}
	if hasN && hasB {
		res.BaselineSagasPerS, res.BaselineP50MS, res.BaselineP99MS, res.BaselineCPUPer1k = b.SagasPerS, b.P50MS, b.P99MS, b.CPUPer1k
		res.BaselineStored = b.StoredPerSaga
		if b.SagasPerS > 0 {
			res.Ratio = round(n.SagasPerS/b.SagasPerS, 3)
		}
	}
	return res
}

// measure starts a system of mode, drives it with k sagas in flight and
// returns what it measured.
func measure(ctx context.Context, c *config, mode string, k, agents, r int, stderr io.Writer, log *slog.Logger) (_ measurement, err error) {
	spec := sysSpec{mode: mode, agents: agents}
	if c.cpuProfile != "" {
		spec.profile = filepath.Join(c.cpuProfile, fmt.Sprintf("%s-k%d-a%d-r%d", mode, k, agents, r))
	}
	sys, err := startSystem(ctx, c, spec, stderr, log)
	if err != nil {
		return measurement{}, err
	}
	defer func() {
		if err != nil {
			sys.dumpLog(stderr)
		}
		sys.stop()
	}()
	idle, err := sys.heap(ctx, 10*time.Second)
	if err != nil {
		return measurement{}, err
	}

	var (
		cpu0, cpu1   map[string]time.Duration
		self0, self1 time.Duration
		busy         uint64
		stored       [2]map[string]uint64
		winErr       error
	)
	opts := bench.LoadOptions{InFlight: k, Warmup: c.warmup, Duration: c.duration, Timeout: c.timeout,
		OnWindow: func(open bool) {
			cpu, err := sys.cpu()
			winErr = errors.Join(winErr, err)
			n, err := sys.stored(ctx)
			winErr = errors.Join(winErr, err)
			if open {
				cpu0, self0, stored[0] = cpu, selfCPU(), n
				return
			}
			cpu1, self1, stored[1] = cpu, selfCPU(), n
			h, err := sys.heap(ctx, 10*time.Second)
			winErr = errors.Join(winErr, err)
			busy = h
		}}
	lr, err := bench.Run(ctx, sys.nc, target(mode), opts)
	if err != nil {
		return measurement{}, err
	}
	if winErr != nil {
		return measurement{}, winErr
	}
	if err := sys.exited(); err != nil {
		return measurement{}, err
	}
	if lr.Errors > 0 {
		log.Warn("sagas failed", "mode", mode, "errors", lr.Errors, "first", lr.FirstError)
	}
	m := measurement{
		SagasPerS: round(lr.PerSecond(), 1),
		P50MS:     ms(lr.Percentile(50)),
		P99MS:     ms(lr.Percentile(99)),
		Completed: lr.Completed, NotCompleted: lr.NotCompleted, Errors: lr.Errors,
		WindowS:      round(lr.Window.Seconds(), 3),
		CPUByProcess: map[string]float64{},
	}
	if lr.Completed > 0 {
		per1k := func(d time.Duration) float64 { return round(d.Seconds()/float64(lr.Completed)*1000, 3) }
		var total time.Duration
		for name, d := range cpu1 {
			total += d - cpu0[name]
			m.CPUByProcess[name] = per1k(d - cpu0[name])
		}
		m.CPUPer1k = per1k(total)
		m.LoadgenCPUPer1k = per1k(self1 - self0)
		var all uint64
		m.StoredByKind = map[string]float64{}
		for kind, n := range stored[1] {
			all += n - stored[0][kind]
			m.StoredByKind[kind] = round(float64(n-stored[0][kind])/float64(lr.Completed), 2)
		}
		m.StoredPerSaga = round(float64(all)/float64(lr.Completed), 2)
	}
	if busy > idle {
		m.CoordBytesPerSaga = round(float64(busy-idle)/float64(k), 0)
	}
	return m, nil
}

// target is how the load generator starts and follows a saga of mode.
func target(mode string) bench.Target {
	if mode == modeBaseline {
		return bench.Target{
			StartSubject: baseline.StartSubject,
			StartData: func(n int) []byte {
				return fmt.Appendf(nil, `{"context":{"customer":"c-%d","amount":%d}}`, n, n)
			},
			Started: func(data []byte) (string, error) {
				var r baseline.StartResponse
				if err := json.Unmarshal(data, &r); err != nil {
					return "", err
				}
				if r.Error != "" || r.SagaID == "" {
					return "", fmt.Errorf("start refused: %q", r.Error)
				}
				return r.SagaID, nil
			},
			EventSubjects: []string{baseline.EventSubject},
			Finished: func(data []byte) (string, bool) {
				var ev baseline.Event
				if json.Unmarshal(data, &ev) != nil {
					return "", false
				}
				return ev.SagaID, ev.Status == "completed"
			},
		}
	}
	var events []string
	for _, s := range []string{"completed", "rolled_back", "timed_out", "failed"} {
		events = append(events, messages.EventSubject(benchSaga, s))
	}
	return bench.Target{
		StartSubject: messages.StartSubject(benchSaga),
		StartData: func(n int) []byte {
			return fmt.Appendf(nil, `{"v":%d,"context":{"customer":"c-%d","amount":%d}}`, messages.Version, n, n)
		},
		Started: func(data []byte) (string, error) {
			var r messages.StartResponse
			if err := json.Unmarshal(data, &r); err != nil {
				return "", err
			}
			if r.Error != nil {
				return "", r.Error
			}
			return r.SagaID, nil
		},
		EventSubjects: events,
		Finished: func(data []byte) (string, bool) {
			var ev messages.Event
			if json.Unmarshal(data, &ev) != nil {
				return "", false
			}
			return ev.SagaID, ev.Status == "completed"
		},
	}
}

// measureHold starts natsaga, stops its agent once the agent has created its
// state stream, starts c.hold sagas, which all wait for their first step,
// and measures the coordinator's live heap per saga. It then stops the
// coordinator, starts it again and measures how long it takes to recover
// them: restore each from the bucket and look up its step's record.
func measureHold(ctx context.Context, c *config, stderr io.Writer, log *slog.Logger) (_ holdResult, err error) {
	log.Info("measuring the coordinator's heap", "sagas", c.hold)
	spec := sysSpec{mode: modeNatsaga, agents: 1}
	if c.cpuProfile != "" {
		spec.profile = filepath.Join(c.cpuProfile, "natsaga-hold")
	}
	sys, err := startSystem(ctx, c, spec, stderr, log)
	if err != nil {
		return holdResult{}, err
	}
	defer func() {
		if err != nil {
			sys.dumpLog(stderr)
		}
		sys.stop()
	}()
	if err := sys.agents[0].Stop(stopWait); err != nil {
		return holdResult{}, fmt.Errorf("stop the agent: %w", err)
	}
	sys.agents = nil
	idle, err := sys.heap(ctx, 10*time.Second)
	if err != nil {
		return holdResult{}, err
	}
	t := target(modeNatsaga)
	var next, failed atomic.Int64
	var firstErr error
	var once sync.Once
	began := time.Now()
	var wg sync.WaitGroup
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := int(next.Add(1))
				if n > c.hold || ctx.Err() != nil {
					return
				}
				resp, err := sys.nc.Request(t.StartSubject, t.StartData(n), c.timeout)
				if err == nil {
					_, err = t.Started(resp.Data)
				}
				if err != nil {
					failed.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	if failed.Load() > 0 {
		return holdResult{}, fmt.Errorf("%d starts failed, first: %w", failed.Load(), firstErr)
	}
	sum, err := sys.summary()
	if err != nil {
		return holdResult{}, err
	}
	held, err := sys.heap(ctx, 10*time.Second)
	if err != nil {
		return holdResult{}, err
	}
	if sum.Active == 0 {
		return holdResult{}, errors.New("no saga active")
	}
	log.Info("measuring a new coordinator's recovery", "sagas", sum.Active)
	if err := sys.coord.Stop(stopWait); err != nil {
		return holdResult{}, fmt.Errorf("stop the coordinator: %w", err)
	}
	began = time.Now()
	if err := sys.coord.Restart(); err != nil {
		return holdResult{}, fmt.Errorf("start the coordinator again: %w", err)
	}
	if _, err := sys.heap(ctx, 10*time.Minute); err != nil {
		return holdResult{}, fmt.Errorf("the coordinator started again is not ready: %w", err)
	}
	recovered := time.Since(began)
	after, err := sys.summary()
	if err != nil {
		return holdResult{}, err
	}
	if after.Active != sum.Active {
		return holdResult{}, fmt.Errorf("the coordinator started again holds %d active sagas, not %d", after.Active, sum.Active)
	}
	return holdResult{Mode: "natsaga-hold", Held: sum.Active,
		CoordBytesPerSaga: round(float64(int64(held)-int64(idle))/float64(sum.Active), 0),
		StartsPerS:        round(float64(c.hold)/took.Seconds(), 0),
		RecoverS:          round(recovered.Seconds(), 3)}, nil
}

// dumpLog copies the tail of the children's log to w.
func (s *system) dumpLog(w io.Writer) {
	f, ok := s.out.(*os.File)
	if !ok || f == os.Stderr {
		return
	}
	data, err := os.ReadFile(f.Name())
	if err != nil {
		return
	}
	if len(data) > 8000 {
		data = data[len(data)-8000:]
	}
	fmt.Fprintf(w, "--- child processes' log (tail) ---\n%s\n", data)
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 2) }

func round(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}

func printResult(w io.Writer, asJSON bool, r result) {
	if asJSON {
		data, _ := json.Marshal(r)
		fmt.Fprintln(w, string(data))
		return
	}
	fmt.Fprintf(w, "run %d  %-8s inflight=%-5d agents=%d conc=%d latency=%sms: %8.0f sagas/s  p50 %7.2f ms  p99 %7.2f ms  cpu %.3f s/1k %s  stored %.2f msgs/saga%s  coordinator %s/saga",
		r.Run, r.Mode, r.InFlight, r.Agents, r.Concurrency, strconv.FormatFloat(r.StepLatencyMS, 'f', -1, 64),
		r.SagasPerS, r.P50MS, r.P99MS, r.CPUPer1k, byProcess(r.CPUByProcess), r.StoredPerSaga, byKind(r.StoredByKind),
		bytesString(r.CoordBytesPerSaga))
	if r.BaselineSagasPerS > 0 {
		fmt.Fprintf(w, "  | baseline %8.0f sagas/s  p50 %7.2f ms  p99 %7.2f ms  cpu %.3f s/1k  stored %.2f msgs/saga  | ratio %.2f",
			r.BaselineSagasPerS, r.BaselineP50MS, r.BaselineP99MS, r.BaselineCPUPer1k, r.BaselineStored, r.Ratio)
	}
	if r.Errors > 0 || r.NotCompleted > 0 {
		fmt.Fprintf(w, "  (%d errors, %d not completed)", r.Errors, r.NotCompleted)
	}
	fmt.Fprintln(w)
}

func byProcess(m map[string]float64) string {
	return fmt.Sprintf("(server %.3f, coordinator %.3f, agents %.3f)", m["server"], m["coordinator"], m["agents"])
}

// natsagaKinds are the kinds of natsaga's streams ([streamKind]), in the
// order the report lists them.
var natsagaKinds = []string{"bucket", "sagas", "records", "state", "commands", "events", "replies"}

// byKind lists the stored messages per saga by kind of stream, natsaga's
// kinds first, in parentheses; "" when there are none.
func byKind(m map[string]float64) string {
	var parts []string
	for _, kind := range natsagaKinds {
		if v, ok := m[kind]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2f", kind, v))
		}
	}
	for _, kind := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(natsagaKinds, kind) {
			parts = append(parts, fmt.Sprintf("%s %.2f", kind, m[kind]))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func bytesString(b float64) string {
	if b >= 1024 {
		return strconv.FormatFloat(b/1024, 'f', 2, 64) + " KiB"
	}
	return strconv.FormatFloat(b, 'f', 0, 64) + " B"
}

// printSummary prints, per configuration, the median and the range over the
// runs of the figures that matter.
func printSummary(w io.Writer, all []result) {
	type key struct{ k, a int }
	groups := map[key][]result{}
	var keys []key
	for _, r := range all {
		kk := key{r.InFlight, r.Agents}
		if _, ok := groups[kk]; !ok {
			keys = append(keys, kk)
		}
		groups[kk] = append(groups[kk], r)
	}
	fmt.Fprintln(w, "summary over runs: median [min, max]")
	for _, kk := range keys {
		rs := groups[kk]
		pick := func(f func(result) float64) string {
			var vs []float64
			for _, r := range rs {
				vs = append(vs, f(r))
			}
			slices.Sort(vs)
			return fmt.Sprintf("%.2f [%.2f, %.2f]", vs[len(vs)/2], vs[0], vs[len(vs)-1])
		}
		fmt.Fprintf(w, "  %s inflight=%d agents=%d: sagas/s %s  p99 ms %s  cpu s/1k %s",
			rs[0].Mode, kk.k, kk.a, pick(func(r result) float64 { return r.SagasPerS }),
			pick(func(r result) float64 { return r.P99MS }), pick(func(r result) float64 { return r.CPUPer1k }))
		if rs[0].BaselineSagasPerS > 0 {
			fmt.Fprintf(w, "  baseline sagas/s %s  p99 ms %s  ratio %s",
				pick(func(r result) float64 { return r.BaselineSagasPerS }),
				pick(func(r result) float64 { return r.BaselineP99MS }),
				pick(func(r result) float64 { return r.Ratio }))
		}
		fmt.Fprintln(w)
	}
}
