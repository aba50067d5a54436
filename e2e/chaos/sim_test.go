package chaos_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/procs"
)

// simHouseholds sizes the chaos simulation: about 6,000 sagas over 30
// ticks, long enough for every kill of the schedule to fall within it.
var simHouseholds = envInt("NATSAGA_CHAOS_SIM_HOUSEHOLDS", 1500)

// TestChaosSimulation runs a floodsim scenario against a system of
// separate processes twice with the same seed: once undisturbed, and once
// while the coordinator, every kind of agent and nats-server are killed
// with SIGKILL and restarted. Both runs write the same outcome log, byte
// for byte: the determinism contract of docs/simulation.md.
func TestChaosSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	bins, err := procs.Build(ctx, filepath.Join(dir, "bin"), false,
		append(slices.Clone(procs.Programs), procs.NATSServer, "floodsim")...)
	require.NoError(t, err)

	clean := simulate(t, ctx, bins, filepath.Join(dir, "clean"), false)
	chaotic := simulate(t, ctx, bins, filepath.Join(dir, "chaos"), true)
	require.NotEmpty(t, clean)
	require.Equal(t, string(clean), string(chaotic), "the same seed gives the same outcome for every saga, crashes or not")
}

// simulate runs a system (nats-server, the coordinator, two copies of each
// agent) and floodsim's scenario of seed 1 and simHouseholds households
// against it, killing and restarting processes meanwhile when chaos is set:
// every kill of the schedule must fall within the run. It returns the
// outcome log.
func simulate(t *testing.T, ctx context.Context, bins map[string]string, dir string, chaos bool) []byte {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	logf, err := os.Create(filepath.Join(dir, "processes.log"))
	require.NoError(t, err)
	defer logf.Close()
	defer func() {
		if t.Failed() {
			data, _ := os.ReadFile(logf.Name())
			t.Logf("process logs of the %s run (tail):\n%s", filepath.Base(dir), tail(data, 20000))
		}
	}()
	sc, err := flood.NewScenario(flood.ScenarioOptions{Seed: 1, Households: simHouseholds})
	require.NoError(t, err)

	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	url := "nats://" + addr
	server, err := procs.Start("nats-server", bins[procs.NATSServer],
		[]string{"-js", "-sd", filepath.Join(dir, "js"), "-a", host, "-p", port}, nil, logf)
	require.NoError(t, err)
	env := []string{"NATS_URL=" + url}
	coordinator, err := procs.Start("coordinator", bins["coordinator"], []string{"-ack-wait", "2s", "-log-level", "warn"}, env, logf)
	require.NoError(t, err)
	all := []*procs.Proc{server, coordinator}
	ledger := map[string]int64{flood.Government: sc.GovernmentBudget, flood.Insurer: sc.InsurerFund}
	agents := map[string][]*procs.Proc{}
	const copies = 2
	for _, role := range roles {
		for i := range copies {
			args := []string{"-name", fmt.Sprintf("%s-%d", role, i), "-ack-wait", "3s", "-log-level", "warn"}
			if l, ok := ledger[role]; ok {
				args = append(args, "-ledger", strconv.FormatInt(l, 10))
			}
			p, err := procs.Start(role+"-agent", bins[role+"-agent"], args, env, logf)
			require.NoError(t, err)
			agents[role] = append(agents[role], p)
			all = append(all, p)
		}
	}
	var stopping atomic.Bool
	var wg sync.WaitGroup
	supervising, stopSupervising := context.WithCancel(ctx)
	defer func() {
		stopping.Store(true)
		stopSupervising()
		wg.Wait()
		for _, p := range all {
			_ = p.Stop(5 * time.Second)
		}
	}()
	// Supervisor: a process that exits comes back, as under a restart
	// policy.
	for _, p := range all {
		wg.Go(func() {
			for {
				select {
				case <-supervising.Done():
					return
				case <-p.Done():
				}
				if stopping.Load() {
					return
				}
				if err := p.Restart(); err != nil {
					t.Errorf("restart %s: %v", p.Name, err)
					return
				}
			}
		})
	}

	outcomes := filepath.Join(dir, "outcomes.jsonl")
	sim, err := procs.Start("floodsim", bins["floodsim"], []string{"-spawn=false", "-expect-agents", strconv.Itoa(copies * len(roles)),
		"-seed", "1", "-households", strconv.Itoa(simHouseholds), "-outcomes", outcomes, "-tick-wait", "2m", "-agent-wait", "2m"}, env, logf)
	require.NoError(t, err)

	began, kills := time.Now(), 0
	if chaos {
		// A seeded schedule of SIGKILLs, several for each kind of process,
		// about half a second apart, while the simulation runs.
		rng := rand.New(rand.NewPCG(uint64(chaosSeed), 2))
		victims := []string{"coordinator", "coordinator", "coordinator", "nats-server", "nats-server"}
		for _, role := range roles {
			victims = append(victims, role, role)
		}
		rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
		defer func() { require.Equal(t, len(victims), kills, "every kill of the schedule falls within the run") }()
		// The first kill waits for the run's first ticks.
		delay := time.Second
	schedule:
		for _, v := range victims {
			select {
			case <-sim.Done():
				break schedule
			case <-ctx.Done():
				t.Fatal("the simulation did not finish in time")
			case <-time.After(delay):
			}
			delay = 300*time.Millisecond + time.Duration(rng.IntN(400))*time.Millisecond
			p := coordinator
			switch v {
			case "coordinator":
			case "nats-server":
				p = server
			default:
				p = agents[v][rng.IntN(copies)]
			}
			t.Logf("%s run: SIGKILL %s (pid %d) at %.1fs", filepath.Base(dir), p.Name, p.PID(), time.Since(began).Seconds())
			p.Kill()
			kills++
		}
	}
	select {
	case <-sim.Done():
	case <-ctx.Done():
		t.Fatal("the simulation did not finish in time")
	}
	require.NoError(t, sim.Err(), "floodsim failed; see the process logs")
	t.Logf("%s run: floodsim done after %.1fs, %d kills", filepath.Base(dir), time.Since(began).Seconds(), kills)
	log, err := os.ReadFile(outcomes)
	require.NoError(t, err)
	return log
}
